"""The metrics-overhead benchmark's arithmetic and its switch (the run itself starts Ray: bench/)."""

import pytest

from andes.benchmarks.gateway_servers import serve_config
from andes.benchmarks.metrics_overhead import Settings, _summary
from andes.config import ServeConfig, load_config


def test_serve_config_turns_both_recorders_off_and_stays_valid():
    off = serve_config("llama2-13b-a100", 16, 8000, metrics=False)
    app = off["applications"][0]
    engine = next(d for d in app["deployments"] if d["name"] == "EngineReplica")
    config = load_config(ServeConfig, {**app["args"], "replica": engine["user_config"]})
    assert not config.gateway.metrics.enabled and not config.replica.metrics.enabled
    on = serve_config("llama2-13b-a100", 16, 8000)
    assert "metrics" not in on["applications"][0]["args"]["gateway"]  # the default: on


def test_summary_compares_medians_and_prices_the_recordings():
    rows = [{"metrics": m, "tokens_per_s": t, "server_cpu": c} for m, t, c in
            [("on", 990.0, 1.0), ("off", 1000.0, 1.0), ("on", 980.0, 1.0), ("off", 1010.0, 1.0),
             ("on", 1000.0, 1.0), ("off", 1000.0, 1.0)]]
    s = Settings(max_tokens=100)
    out = _summary(rows, {"cpu_s_per_request": 1e-4, "cpu_s_per_sample": 1e-3}, s)
    assert out["tokens_per_s_on_median"] == 990.0 and out["tokens_per_s_off_median"] == 1000.0
    assert out["throughput_overhead"] == pytest.approx(0.01)
    assert out["paired_ratios_on_over_off"] == pytest.approx([0.99, 980 / 1010, 1.0])
    assert out["paired_overhead"] == pytest.approx(1 - (0.99 * 980 / 1010) ** (1 / 3))
    # 10 requests/s x 0.1 ms + one 1 ms sample per second, over 1 CPU-second per second.
    assert out["requests_per_s"] == 10.0 and out["recording_cpu_share"] == pytest.approx(0.002)
