"""Tests for andes.workload (trace generation, JSONL I/O) and the ``andes trace`` subcommand."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from andes.cli.trace import add_trace_parser
from andes.expectations import DEFAULT_SERVICE_CLASSES, ServiceClass
from andes.workload import (
    MAX_ARRIVAL_S,
    LengthDistribution,
    TraceFormatError,
    TraceRequest,
    burst_arrivals,
    gamma_arrivals,
    generate_trace,
    make_trace,
    poisson_arrivals,
    read_trace,
    write_trace,
)

N_LARGE = 100_000


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def request(**overrides) -> dict:
    """A valid JSONL record, with fields replaced by ``overrides``."""
    record = {"arrival": 0.5, "prompt_tokens": 10, "output_tokens": 20, "ttft": 1.0, "tds": 4.0,
              "class": "text"}
    record.update(overrides)
    return record


def write_lines(path, lines) -> None:
    path.write_text("".join(line + "\n" for line in lines))


# --- arrival processes ------------------------------------------------------------------------


def test_poisson_rate_and_exponential_gaps():
    times = poisson_arrivals(4.0, N_LARGE, rng())
    gaps = np.diff(times, prepend=0.0)
    assert times.shape == (N_LARGE,)
    assert N_LARGE / times[-1] == pytest.approx(4.0, rel=0.02)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.03)


@pytest.mark.parametrize("cv", [0.5, 2.0, 4.0])
def test_gamma_rate_and_cv(cv):
    times = gamma_arrivals(2.0, cv, N_LARGE, rng(1))
    gaps = np.diff(times, prepend=0.0)
    assert N_LARGE / times[-1] == pytest.approx(2.0, rel=0.05)
    assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.1)


@pytest.mark.parametrize("intensity,fraction", [(2.0, 0.35), (5.0, 0.1), (0.5, 0.5)])
def test_burst_rate_ratio_and_mean(intensity, fraction):
    period, mean_rate = 10.0, 3.0
    times = burst_arrivals(mean_rate, intensity, fraction, period, N_LARGE, rng(2))
    num_periods = math.floor(times[-1] / period)
    times = times[times < num_periods * period]  # whole periods only
    in_burst = (times % period) < fraction * period
    rate_in = in_burst.sum() / (num_periods * fraction * period)
    rate_out = (~in_burst).sum() / (num_periods * (1 - fraction) * period)
    assert rate_in / rate_out == pytest.approx(intensity, rel=0.05)
    assert times.size / (num_periods * period) == pytest.approx(mean_rate, rel=0.02)


def test_burst_is_poisson_within_a_phase():
    """Exactness check: counts in a fixed window of the burst phase are Poisson (var = mean)."""
    times = burst_arrivals(2.0, 4.0, 0.5, 10.0, N_LARGE, rng(3))
    num_periods = math.floor(times[-1] / 10.0)
    window = times[(times % 10.0) < 5.0]
    counts = np.bincount((window // 10.0).astype(int), minlength=num_periods)[:num_periods]
    assert counts.mean() == pytest.approx(4.0 * (2.0 / 2.5) * 5.0, rel=0.03)
    assert counts.var() / counts.mean() == pytest.approx(1.0, rel=0.1)


@settings(max_examples=50, deadline=None)
@given(kind=st.sampled_from(["poisson", "gamma", "burst"]),
       rate=st.floats(0.01, 1000.0), seed=st.integers(0, 2**32), n=st.integers(0, 200),
       fraction=st.floats(0.0, 1.0), intensity=st.floats(0.1, 50.0))
def test_arrivals_sorted_nonnegative_finite(kind, rate, seed, n, fraction, intensity):
    trace = make_trace(kind, rate, n, seed, burst_fraction=fraction, intensity=intensity,
                       period=7.0)
    times = np.array([r.arrival for r in trace])
    assert len(trace) == n
    assert np.all(np.isfinite(times)) and np.all(times >= 0)
    assert np.all(np.diff(times) >= 0)


@pytest.mark.parametrize("call", [
    lambda: poisson_arrivals(0.0, 10, rng()),
    lambda: poisson_arrivals(math.inf, 10, rng()),
    lambda: poisson_arrivals(1.0, -1, rng()),
    lambda: gamma_arrivals(1.0, 0.0, 10, rng()),
    lambda: burst_arrivals(1.0, 2.0, 1.5, 60.0, 10, rng()),
    lambda: burst_arrivals(1.0, 2.0, 0.3, 0.0, 10, rng()),
    lambda: make_trace("uniform", 1.0, 10, 0),  # type: ignore[arg-type]
])
def test_invalid_process_parameters_raise(call):
    with pytest.raises(ValueError):
        call()


# --- determinism ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["poisson", "gamma", "burst"])
def test_same_seed_same_trace(kind):
    assert make_trace(kind, 2.0, 300, 7) == make_trace(kind, 2.0, 300, 7)
    assert make_trace(kind, 2.0, 300, 7) != make_trace(kind, 2.0, 300, 8)


def test_same_seed_same_requests_at_any_rate_and_kind():
    def population(trace):
        return [(r.prompt_tokens, r.output_tokens, r.ttft, r.tds, r.cls) for r in trace]
    base = make_trace("poisson", 1.0, 500, 11)
    for kind, rate in [("poisson", 8.0), ("gamma", 0.3), ("burst", 5.0)]:
        other = make_trace(kind, rate, 500, 11)
        assert population(other) == population(base)
        assert [r.arrival for r in other] != [r.arrival for r in base]


def test_lengths_do_not_depend_on_class_mix():
    text = make_trace("poisson", 1.0, 200, 5)
    mixed = make_trace("poisson", 1.0, 200, 5, classes={"text": 0.5, "voice": 0.5})
    assert [(r.prompt_tokens, r.output_tokens) for r in mixed] == \
        [(r.prompt_tokens, r.output_tokens) for r in text]


# --- lengths and expectations -----------------------------------------------------------------


def test_length_means_match_documented_sharegpt_values():
    trace = generate_trace(np.zeros(N_LARGE), seed=3)
    prompt = np.array([r.prompt_tokens for r in trace])
    output = np.array([r.output_tokens for r in trace])
    assert prompt.mean() == pytest.approx(161.31, rel=0.03)
    assert output.mean() == pytest.approx(337.99, rel=0.03)
    assert prompt.min() >= 1 and output.min() >= 1
    assert (prompt + output).max() <= 2048


@settings(max_examples=30, deadline=None)
@given(max_context=st.integers(2, 300), seed=st.integers(0, 2**32))
def test_clipping_respects_max_context(max_context, seed):
    lengths = LengthDistribution(max_context=max_context)
    trace = generate_trace(np.zeros(200), seed, lengths)
    assert all(r.prompt_tokens >= 1 and r.output_tokens >= 1 for r in trace)
    assert all(r.prompt_tokens + r.output_tokens <= max_context for r in trace)


def test_generated_ttft_follows_the_default_rule():
    big = LengthDistribution(mean_prompt_tokens=9000, sigma_prompt=0.5, max_context=40000)
    for r in generate_trace(np.zeros(500), 1, big):
        assert r.ttft == max(1.0, r.prompt_tokens / 5000)


def test_fixed_class_ttft_overrides_rule():
    fast = ServiceClass(tds=10.0, ttft=0.25)
    trace = generate_trace(np.zeros(50), 0, classes={"fast": 1.0}, service_classes={"fast": fast})
    assert {(r.ttft, r.tds, r.cls) for r in trace} == {(0.25, 10.0, "fast")}


def test_a_class_with_a_mix_draws_its_readers_not_its_default_tds():
    mixed = ServiceClass(tds=5.0, tds_mix=((1.0, 2.0), (3.0, 8.0)))
    trace = generate_trace(np.zeros(4000), 2, classes={"m": 1.0}, service_classes={"m": mixed})
    tds = np.array([r.tds for r in trace])
    assert set(tds.tolist()) == {2.0, 8.0}
    assert np.mean(tds == 8.0) == pytest.approx(0.75, abs=0.03)


def test_text_tds_mix_shares():
    trace = generate_trace(np.zeros(N_LARGE), seed=4)
    values, counts = np.unique([r.tds for r in trace], return_counts=True)
    expected = {1 / 0.196: 0.2804, 1 / 0.230: 0.5187, 1 / 0.240: 0.1119, 1 / 0.249: 0.0556,
                1 / 0.264: 0.0333}
    assert len(values) == 5
    for value, count in zip(values, counts):
        share = next(s for tds, s in expected.items() if math.isclose(tds, value))
        assert count / N_LARGE == pytest.approx(share, abs=0.005)


def test_class_mix_and_voice_tds():
    trace = generate_trace(np.zeros(20_000), 9, classes={"text": 0.7, "voice": 0.3})
    voice = [r for r in trace if r.cls == "voice"]
    assert len(voice) / len(trace) == pytest.approx(0.3, abs=0.015)
    assert {r.tds for r in voice} == {3.3}
    assert all(r.tds > 3.5 for r in trace if r.cls == "text")


def test_default_classes_are_read_only():
    with pytest.raises(TypeError):
        DEFAULT_SERVICE_CLASSES["text"] = DEFAULT_SERVICE_CLASSES["voice"]  # type: ignore[index]


@pytest.mark.parametrize("classes", [{}, {"audio": 1.0}, {"text": -1.0}, {"text": 0.0}])
def test_bad_class_mix_raises(classes):
    with pytest.raises(ValueError):
        generate_trace(np.zeros(3), 0, classes=classes)


def test_unsorted_arrivals_rejected_by_generate():
    with pytest.raises(ValueError, match="non-decreasing"):
        generate_trace(np.array([1.0, 0.5]), 0)


# --- TraceRequest validation ------------------------------------------------------------------


@pytest.mark.parametrize("field,value", [
    ("arrival", -1.0), ("arrival", math.nan), ("prompt_tokens", 0), ("prompt_tokens", 1.5),
    ("output_tokens", True), ("ttft", 0.0), ("ttft", 3601.0), ("tds", math.inf), ("tds", 1001.0),
    ("arrival", 1e300), ("arrival", MAX_ARRIVAL_S * 1.001), ("ttft", 1e-300), ("ttft", 9.99e-4), ("tds", 1e-300),
])
def test_trace_request_rejects_invalid_field(field, value):
    fields = dict(arrival=0.0, prompt_tokens=1, output_tokens=1, ttft=1.0, tds=4.0)
    fields[field] = value
    with pytest.raises(ValueError, match=f"'{field}'"):
        TraceRequest(**fields)


def test_trace_request_normalises_numpy_types():
    r = TraceRequest(np.float32(1.5), np.int64(3), np.int32(4), 1, 2)
    assert type(r.arrival) is float and type(r.prompt_tokens) is int and type(r.ttft) is float


# --- JSONL I/O --------------------------------------------------------------------------------


def test_write_read_roundtrip(tmp_path):
    trace = make_trace("burst", 3.0, 400, 2, classes={"text": 0.8, "voice": 0.2})
    path = tmp_path / "t.jsonl"
    write_trace(path, trace)
    assert read_trace(path) == trace


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1e7), st.integers(1, 10**6), st.integers(1, 10**6),
                          st.floats(1e-3, 3600), st.floats(0.01, 1000),
                          st.one_of(st.none(), st.text(max_size=5))), max_size=20))
def test_roundtrip_any_valid_trace(tmp_path_factory, rows):
    trace = sorted((TraceRequest(*row) for row in rows), key=lambda r: r.arrival)
    path = tmp_path_factory.mktemp("rt") / "t.jsonl"
    write_trace(path, trace)
    assert read_trace(path) == trace


def test_read_accepts_production_style_file(tmp_path):
    path = tmp_path / "prod.jsonl"
    no_class = {k: v for k, v in request(arrival=100.0).items() if k != "class"}
    write_lines(path, [json.dumps(request(arrival=99.5, user="u1")), "", "   ",
                       json.dumps(no_class), json.dumps(request(arrival=100.0, **{"class": None}))])
    trace = read_trace(path)
    assert [r.arrival for r in trace] == [99.5, 100.0, 100.0]
    assert [r.cls for r in trace] == ["text", None, None]


@pytest.mark.parametrize("bad_line,field,reason", [
    ("{not json", None, "invalid JSON"),
    ("[1, 2]", None, "JSON object"),
    (json.dumps({k: v for k, v in request().items() if k != "ttft"}), "ttft", "missing"),
    (json.dumps(request(tds=-1)), "tds", "must be > 0 (got -1)"),
    ('{"arrival": 1, "prompt_tokens": 1, "output_tokens": 1, "ttft": NaN, "tds": 4}',
     "ttft", "finite"),
    ('{"arrival": 1, "prompt_tokens": 1, "output_tokens": 1, "ttft": 1, "tds": Infinity}',
     "tds", "finite"),
    (json.dumps(request(prompt_tokens=12.0)), "prompt_tokens", "integer"),
    (json.dumps(request(output_tokens="7")), "output_tokens", "integer"),
    (json.dumps(request(arrival="soon")), "arrival", "number"),
    (json.dumps(request(arrival=0.1)), "arrival", "previous arrival"),
    (json.dumps(request(**{"class": 3})), "class", "string"),
    (json.dumps(request(arrival=1e300)), "arrival", "must be <= 1e+07 (got 1e+300)"),
    (json.dumps(request(ttft=1e-300)), "ttft", "must be >= 0.001 (got 1e-300)"),
    (json.dumps(request(tds=1e-300)), "tds", "must be >= 0.01 (got 1e-300)"),
])
def test_malformed_line_names_line_and_field(tmp_path, bad_line, field, reason):
    path = tmp_path / "trace.jsonl"
    write_lines(path, [json.dumps(request(arrival=0.2)), "", bad_line])
    with pytest.raises(TraceFormatError) as info:
        read_trace(path)
    err = info.value
    assert err.line == 3 and err.field == field
    assert str(err).startswith("trace.jsonl line 3: ")
    assert reason in str(err)
    if field:
        assert f"field '{field}'" in str(err)


@pytest.mark.parametrize("prompt,output,field,reason", [
    (100, 1, "prompt_tokens", "100 exceeds the engine's limit of 100 tokens per request, at least one of them "
                              "generated"),
    (60, 41, "output_tokens", "41 after 60 prompt tokens exceeds the engine's limit of 100 tokens per request"),
])
def test_a_request_longer_than_the_engine_limit_names_line_and_field(tmp_path, prompt, output, field, reason):
    path = tmp_path / "long.jsonl"
    write_lines(path, [json.dumps(request(prompt_tokens=60, output_tokens=40)), "",
                       json.dumps(request(prompt_tokens=prompt, output_tokens=output))])
    assert len(read_trace(path)) == 2  # no limit given: nothing to check against
    with pytest.raises(TraceFormatError) as info:
        read_trace(path, max_request_tokens=100)
    assert (info.value.line, info.value.field) == (3, field)
    assert str(info.value) == f"long.jsonl line 3: field '{field}': {reason}"


def test_non_utf8_line_names_line(tmp_path):
    path = tmp_path / "trace.jsonl"
    path.write_bytes(json.dumps(request()).encode() + b"\n\xff\xfe{}\n")
    with pytest.raises(TraceFormatError, match="line 2: not valid UTF-8") as info:
        read_trace(path)
    assert info.value.line == 2 and info.value.field is None


def test_crlf_and_bom_accepted(tmp_path):
    path = tmp_path / "win.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(request()).encode() + b"\r\n\r\n")
    assert len(read_trace(path)) == 1


def test_error_message_format(tmp_path):
    path = tmp_path / "trace.jsonl"
    write_lines(path, [json.dumps(request()), json.dumps(request()), json.dumps(request(tds=-1))])
    with pytest.raises(TraceFormatError, match=r"^trace\.jsonl line 3: field 'tds': "
                                               r"must be > 0 \(got -1\)$"):
        read_trace(path)


def test_write_rejects_unsorted_trace(tmp_path):
    trace = [TraceRequest(1.0, 1, 1, 1.0, 1.0), TraceRequest(0.5, 1, 1, 1.0, 1.0)]
    with pytest.raises(ValueError, match="sorted"):
        write_trace(tmp_path / "t.jsonl", trace)


# --- CLI --------------------------------------------------------------------------------------


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="andes")
    add_trace_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_writes_readable_trace(tmp_path, capsys):
    out = tmp_path / "cli.jsonl"
    code = run_cli(["trace", "--kind", "burst", "--rate", "2", "--num-requests", "50",
                    "--seed", "3", "--voice-share", "0.4", "-o", str(out)])
    assert code == 0
    assert read_trace(out) == make_trace("burst", 2.0, 50, 3,
                                         classes={"text": 0.6, "voice": 0.4})
    summary = capsys.readouterr().out.strip().splitlines()
    assert len(summary) == 1 and "50 requests" in summary[0] and "mean prompt" in summary[0]


@pytest.mark.parametrize("argv", [
    ["--kind", "uniform", "--rate", "1", "--num-requests", "5", "--seed", "0"],
    ["--kind", "poisson", "--rate", "-1", "--num-requests", "5", "--seed", "0"],
    ["--kind", "poisson", "--rate", "nan", "--num-requests", "5", "--seed", "0"],
    ["--kind", "poisson", "--rate", "1", "--num-requests", "0", "--seed", "0"],
    ["--kind", "poisson", "--rate", "1", "--num-requests", "2.5", "--seed", "0"],
    ["--kind", "burst", "--rate", "1", "--num-requests", "5", "--seed", "0",
     "--burst-fraction", "1.5"],
    ["--kind", "poisson", "--rate", "1", "--num-requests", "5", "--seed", "0",
     "--voice-share", "2"],
    ["--kind", "poisson", "--rate", "1", "--num-requests", "5"],
    ["--kind", "poisson", "--rate", "1", "--num-requests", "5", "--seed", "-3"],
    ["--kind", "poisson", "--rate", "1", "--num-requests", "5", "--seed", "0",
     "--max-context", "1"],
])
def test_cli_bad_arguments_exit_2(tmp_path, capsys, argv):
    with pytest.raises(SystemExit) as info:
        run_cli(["trace", *argv, "-o", str(tmp_path / "x.jsonl")])
    assert info.value.code == 2
    assert "error" in capsys.readouterr().err


def test_cli_unwritable_output_returns_1(tmp_path, capsys):
    code = run_cli(["trace", "--kind", "poisson", "--rate", "1", "--num-requests", "3",
                    "--seed", "0", "-o", str(tmp_path / "missing" / "x.jsonl")])
    assert code == 1
    assert "cannot write" in capsys.readouterr().err
