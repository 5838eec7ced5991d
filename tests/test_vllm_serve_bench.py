"""The closed loop of bench/vllm_serve.py (the engines themselves run in the bench, not here)."""

import asyncio

import pytest

from andes.benchmarks.vllm_serve import closed_loop


def test_closed_loop_counts_tokens_of_streams_ending_inside_the_window():
    async def one(i: int) -> tuple[int, float]:
        await asyncio.sleep(0.05)
        if i == 3:
            raise RuntimeError("a failed stream")
        return 10, 0.01 * (i % 2)

    result = asyncio.run(closed_loop(4, one, warmup_s=0.1, window_s=0.5))
    # 4 lanes, one stream per 50 ms at most each: at most 44 streams end in the 0.5 s window
    # (fewer on a loaded machine, whose sleeps run long).
    assert 1 <= result["streams_done"] <= 44
    assert result["tokens_per_s"] == pytest.approx(result["streams_done"] * 10 / 0.5)
    assert result["errors"] == 1 and result["mean_tokens_per_stream"] == 10
    assert 0.0 < result["mean_ttft_s"] < 0.01  # the streams' own TTFTs, averaged
    assert result["mean_stream_s"] >= 0.05
