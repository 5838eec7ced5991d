"""What a preemption costs the engine: the work of bringing a victim back (docs/design.md, Andes).

A victim's KV either goes to host memory (swapped out now and back in later: its bytes cross
the host link twice, and the simulated engine, like vLLM, blocks the step while they do) or is
dropped and recomputed on return: a prefill of its prompt and every token it generated, in
chunks of the engine's prefill budget (``max_num_batched_tokens``), each chunk paying the
prefill base. Either way the engine spends that time instead of making tokens, so the policy
charges it against what the preemption gains. Pure arithmetic over the latency model.
"""

from __future__ import annotations

import numpy as np

from andes.latency import LatencyModel

__all__ = ["prefill_delay_seconds", "recompute_seconds", "restore_seconds", "swap_round_trip_seconds",
           "victim_restore"]


def _chunks(latency: LatencyModel, num_tokens: np.ndarray) -> np.ndarray:
    return np.ceil(num_tokens / latency.profile.max_num_batched_tokens)


def recompute_seconds(latency: LatencyModel, num_tokens) -> np.ndarray:
    """Engine time a re-prefill of ``num_tokens`` adds to the steps that carry it: the work per
    token plus one prefill base per chunk (those steps run anyway for the rest of the batch)."""
    p = latency.profile
    n = np.asarray(num_tokens, dtype=np.float64)
    return _chunks(latency, n) * p.prefill_base_s + p.prefill_per_token_s * n


def prefill_delay_seconds(latency: LatencyModel, num_tokens) -> np.ndarray:
    """Wait before the first token of a request whose ``num_tokens`` of context must be
    (re)prefilled: one step per chunk, each a decode base plus its share of the prefill."""
    n = np.asarray(num_tokens, dtype=np.float64)
    delay = recompute_seconds(latency, n) + _chunks(latency, n) * latency.profile.decode_base_s
    return np.where(n > 0, delay, 0.0)


def swap_round_trip_seconds(latency: LatencyModel, num_tokens) -> np.ndarray:
    """Engine time to swap ``num_tokens`` of KV out now and back in on return (``swap_time``
    both ways, without its input checks: this runs on every scheduler step)."""
    p = latency.profile
    return np.asarray(num_tokens, dtype=np.float64) * (2.0 * p.kv_bytes_per_token / p.swap_bytes_per_s)


def _both(latency: LatencyModel, context_tokens) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    recompute = recompute_seconds(latency, context_tokens)
    swap = swap_round_trip_seconds(latency, context_tokens)
    return swap < recompute, swap, recompute


def restore_seconds(latency: LatencyModel, context_tokens) -> tuple[np.ndarray, np.ndarray]:
    """(is_swap, seconds): the cheaper way back for victims of ``context_tokens``, host memory
    aside. On a tie recompute wins: it holds no host memory."""
    is_swap, swap, recompute = _both(latency, context_tokens)
    return is_swap, np.where(is_swap, swap, recompute)


def victim_restore(latency: LatencyModel, context_tokens: np.ndarray, held_blocks: np.ndarray,
                   free_cpu_blocks: int) -> tuple[np.ndarray, np.ndarray]:
    """(is_swap, seconds) for victims evicted in the given order: a victim swaps when that is
    cheaper and the host blocks of the swaps before it leave room for its own; otherwise it is
    recomputed."""
    is_swap, swap, recompute = _both(latency, context_tokens)
    is_swap &= np.cumsum(np.where(is_swap, held_blocks, 0)) <= free_cpu_blocks
    return is_swap, np.where(is_swap, swap, recompute)
