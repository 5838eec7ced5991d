"""The pure half of the vLLM scheduler: expectations from extra_args, settings, the policy view.

Requests are vLLM's own ``Request`` objects (no engine needed to build them).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from andes.config import ConfigError
from andes.engines.vllm.mapping import RequestTrack, build_view, expectations_from_extra_args
from andes.engines.vllm.settings import SchedulerSettings, settings_from
from andes.expectations import ExpectationRules
from andes.qoe import qoe

pytestmark = pytest.mark.vllm
vllm = pytest.importorskip("vllm")

from vllm import SamplingParams  # noqa: E402
from vllm.v1.request import Request  # noqa: E402

RULES = ExpectationRules()  # text 4.8 tokens/s, voice 3.3, ttft max(1, prompt/5000)


def make_request(rid: str, prompt_len: int, arrival: float, extra: dict | None = None) -> Request:
    params = SamplingParams(max_tokens=64, extra_args=extra)
    return Request(rid, prompt_token_ids=list(range(1, prompt_len + 1)), sampling_params=params,
                   pooling_params=None, arrival_time=arrival)


def test_expectations_per_request_then_service_class_then_default():
    assert expectations_from_extra_args({"ttft": 2.5, "tds": 7}, 10, RULES) == (2.5, 7.0)
    assert expectations_from_extra_args({"service_class": "voice"}, 10, RULES) == (1.0, 3.3)
    assert expectations_from_extra_args(None, 10, RULES) == (1.0, 4.8)
    assert expectations_from_extra_args({}, 20_000, RULES) == (4.0, 4.8)  # long prompt: 20k/5000 s
    assert expectations_from_extra_args({"service_class": "voice", "tds": 9.0}, 10, RULES) == (1.0, 9.0)
    # Keys that belong to other vLLM features pass through untouched.
    assert expectations_from_extra_args({"kv_transfer_params": {}}, 10, RULES) == (1.0, 4.8)


@pytest.mark.parametrize("extra, field", [
    ({"ttft": 0}, "ttft"), ({"ttft": -1.0}, "ttft"), ({"ttft": math.inf}, "ttft"), ({"ttft": "1"}, "ttft"),
    ({"ttft": True}, "ttft"), ({"ttft": None}, "ttft"), ({"tds": 0}, "tds"), ({"tds": 1e9}, "tds"),
    ({"tds": math.nan}, "tds"),
    ({"service_class": "nope"}, "service_class"), ({"service_class": 3}, "service_class"),
])
def test_bad_expectations_name_the_field(extra, field):
    with pytest.raises(ValueError, match=f"^{field}:"):
        expectations_from_extra_args(extra, 10, RULES)


def test_track_digest_matches_reference_qoe():
    track = RequestTrack(ttft=1.0, tds=4.0, arrival=100.0, last_change=100.0)
    times = [100.5, 100.6, 100.7, 102.5, 102.6, 103.9]
    for t in times:
        track.on_tokens(1, t)
    assert track.digest.num_tokens == len(times)
    assert track.digest.qoe() == pytest.approx(qoe(np.array(times) - 100.0, 1.0, 4.0))
    assert track.last_change == 100.5  # the first token of the segment
    track.on_preempted(104.0, by_policy=True)
    track.on_tokens(2, 105.0)
    assert (track.last_change, track.num_policy_preemptions, track.digest.num_tokens) == (105.0, 1, 8)


def test_view_of_running_and_waiting_requests():
    a = make_request("a", 40, 10.0, {"ttft": 2.0, "tds": 5.0})
    b = make_request("b", 100, 11.0)
    c = make_request("c", 31, 12.0, {"service_class": "voice"})
    # ``a`` has produced 3 tokens (all computed); ``b`` is half-way through its prefill.
    a.append_output_token_ids([7, 8, 9])
    a.num_computed_tokens = 42  # the last sampled token is not computed yet
    b.num_computed_tokens = 50
    b.num_preemptions = 2
    tracks = []
    for r in (a, b, c):
        ttft, tds = expectations_from_extra_args(r.sampling_params.extra_args, r.num_prompt_tokens, RULES)
        tracks.append(RequestTrack(ttft, tds, r.arrival_time, last_change=r.arrival_time))
    for t in (12.5, 12.6, 12.7):
        tracks[0].on_tokens(1, t)
    view = build_view([a, b, c], tracks, num_running=2, block_size=32)
    assert view.is_running.tolist() == [True, True, False]
    assert view.ttft.tolist() == [2.0, 1.0, 1.0] and view.tds.tolist() == [5.0, 4.8, 3.3]
    assert view.arrival.tolist() == [10.0, 11.0, 12.0]
    assert view.num_prompt_tokens.tolist() == [40, 100, 31]
    assert view.num_output_tokens.tolist() == [3, 0, 0]
    # Blocks to run one more step: context + 1 token, in 32-token blocks.
    assert view.num_blocks.tolist() == [2, 4, 1]
    assert view.num_uncomputed.tolist() == [1, 50, 0]  # waiting requests: 0 by convention
    assert view.num_preemptions.tolist() == [0, 2, 0]
    assert view.last_digest[0] == pytest.approx(tracks[0].digest.last_digest)
    assert np.isneginf(view.last_digest[1:]).all()  # no token yet
    assert np.isnan(view.remaining_tokens).all()
    assert len(build_view([], [], 0, 32)) == 0


def test_settings_from_additional_config_then_environment(tmp_path):
    s = settings_from({"andes": {"policy": {"name": "fcfs"}, "online_refit": False}}, env={"ANDES_POLICY": "lqf"})
    assert (s.policy.name, s.online_refit) == ("fcfs", False)  # additional_config wins
    assert settings_from({}, env={"ANDES_POLICY": "lqf"}).policy.name == "lqf"
    path = tmp_path / "andes.json"
    path.write_text(json.dumps({"policy": {"name": "andes", "andes": {"horizon_s": 5}}}))
    s = settings_from(None, env={"ANDES_CONFIG": str(path), "ANDES_POLICY": "andes"})
    assert s.policy.andes.horizon_s == 5
    assert settings_from({}, env={}) == SchedulerSettings()


def test_settings_carry_their_own_service_classes():
    s = settings_from({"andes": {"default_service_class": "fast",
                                 "service_classes": {"fast": {"tds": 12, "ttft": 0.3}}}}, env={})
    rules = s.expectations_config()
    assert expectations_from_extra_args(None, 10, rules) == (0.3, 12.0)
    with pytest.raises(ValueError, match="^service_class:"):
        expectations_from_extra_args({"service_class": "text"}, 10, rules)
    assert SchedulerSettings().expectations_config().expectations(None, 10) == (1.0, 4.8)


@pytest.mark.parametrize("extra, env, path", [
    ({"andes": {"polcy": {}}}, {}, "additional_config.andes.polcy"),
    ({"andes": {"policy": {"name": "sjf"}}}, {}, "additional_config.andes.policy.name"),
    ({"andes": {"profile": "no-such-profile"}}, {}, "no-such-profile"),
    ({"andes": {"default_service_class": "chat"}}, {}, "default_service_class"),
    ({"andes": {"service_classes": {"text": {"tds": -1}}}}, {}, "additional_config.andes.service_classes.text.tds"),
    ({"andes": {"policy": {"andes": {"horizon_s": 0}}}}, {}, "additional_config.andes.policy.andes.horizon_s"),
    ({}, {"ANDES_CONFIG": "{not json"}, "ANDES_CONFIG"),
    ({}, {"ANDES_POLICY": "sjf"}, "ANDES_CONFIG.policy.name"),
])
def test_bad_settings_name_the_field(extra, env, path):
    with pytest.raises(ConfigError, match=path.replace(".", r"\.")):
        settings_from(extra, env=env)


def test_front_door_validator_names_the_field():
    from vllm.exceptions import VLLMValidationError

    from andes.engines.vllm.validation import AndesExpectations

    AndesExpectations.validate_params(SamplingParams(extra_args={"ttft": 1.5, "tds": 8, "service_class": "x"}))
    AndesExpectations.validate_params(SamplingParams())
    for extra, field in [({"tds": -1}, "tds"), ({"ttft": "soon"}, "ttft"), ({"service_class": ""}, "service_class")]:
        with pytest.raises(VLLMValidationError, match=f"^{field}:") as info:
            AndesExpectations.validate_params(SamplingParams(extra_args=extra))
        assert info.value.parameter == field


def test_view_from_row_blocks_equals_view_of_all():
    from andes.engines.vllm.mapping import request_rows, view_from_rows

    reqs = [make_request(f"q{i}", 10 + 7 * i, float(i)) for i in range(5)]
    tracks = [RequestTrack(1.0, 4.8, r.arrival_time, last_change=r.arrival_time) for r in reqs]
    tracks[1].on_tokens(2, 3.0)
    whole = build_view(reqs, tracks, 2, 16)
    parts = view_from_rows(np.concatenate([request_rows(reqs[:2], tracks[:2]), request_rows(reqs[2:], tracks[2:])]), 2, 16)
    for name in ("is_running", "arrival", "num_blocks", "last_digest", "num_output_tokens", "num_uncomputed"):
        np.testing.assert_array_equal(getattr(parts, name), getattr(whole, name))
