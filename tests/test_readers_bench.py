"""The readers benchmark's bookkeeping (andes.benchmarks.readers), without servers."""

from andes.benchmarks.readers import Settings, max_readers, summarise_level


def record(sent, client, server, events=5, error=None):
    return {"sent": sent, "error": error, "events": events, "tokens": 60, "client_qoe": client,
            "client_ttft": 0.3, "server_qoe": server, "server_ttft": 0.1, "read_until": sent + 13}


def test_level_passes_only_on_mean_p10_and_no_errors():
    s = Settings()
    good = {"records": [record(10 + i, 1.0, 1.0) for i in range(20)], "cpu_s": 1.0, "wall_s": 10.0,
            "lag_p99_s": 0.01}
    out = summarise_level([good], 10.0, 30.0, s)
    assert out["passed"] and out["requests"] == 20 and out["events_per_s"] == 5.0
    assert out["ttft_diff_mean_s"] == 0.2 and out["client_cpu"] == [0.1] and not out["client_bound"]
    # Outside the window: not counted. One poor reader in ten drags p10 under the bar.
    poor = {**good, "records": good["records"] + [record(11 + i, 0.5, 1.0) for i in range(3)]
            + [record(99, 0.0, 0.0)]}
    out = summarise_level([poor], 10.0, 30.0, s)
    assert out["requests"] == 23 and not out["passed"]
    assert 0.06 < out["qoe_abs_diff_mean"] < 0.07
    failed = {**good, "records": good["records"] + [{"sent": 12.0, "error": "HTTP 503"}], "lag_p99_s": 0.3}
    out = summarise_level([failed], 10.0, 30.0, s)
    assert out["errors"] == 1 and not out["passed"] and out["client_bound"]


def test_max_readers_is_the_last_level_passed_in_an_unbroken_run():
    rows = [{"mode": "m", "readers": n, "passed": ok} for n, ok in ((50, True), (100, True), (200, False), (300, True))]
    assert max_readers(rows, "m") == 100
    assert max_readers([{"mode": "m", "readers": 50, "passed": False}], "m") == 0
