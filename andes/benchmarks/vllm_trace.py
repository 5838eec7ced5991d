"""A trace replayed on the real vLLM engine through the engine interface, as its consumer sees it.

``bench/fidelity.py`` drives vLLM's ``LLMEngine.step()`` itself and stamps a token when the step
that made it returns; that measures the engine. A policy comparison must measure what a client
of the engine gets, so here each request goes through ``VllmEngine.submit`` (the adapter every
served replica uses) when its arrival time has passed on the wall clock, and each token is
stamped with the time of the ``TokenEvent`` that carried it, in this process. QoE is computed
from those receive times, relative to the moment the request was actually submitted (on a busy
host the submitting loop may lag its plan; the lag is recorded, never hidden).

Prompts are text with an exact token count (the adapter tokenises), made of random single-token
words so no two requests share a KV block through vLLM's prefix cache; outputs run to the
trace's length (``ignore_eos``).

Also here: a saturating closed loop that measures the engine's sustainable token rate with the
policy it runs at the time, so a benchmark can set its load relative to the capacity it finds in
the same run, whatever the host's speed.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from andes.workload import TraceRequest

__all__ = ["ClosedLoopRate", "PromptMaker", "Replay", "closed_loop_rate", "replay", "wait_until_idle"]


class PromptMaker:
    """Prompt texts that encode to an exact number of tokens with ``tokenizer``, all different.

    The words are the tokenizer's single-token words (with their leading space) from ``words``;
    the byte-level pre-tokenizer splits at spaces, so a text of ``k`` such words encodes to ``k``
    tokens plus the tokenizer's special tokens (BOS), which ``text`` accounts for and checks.
    """

    def __init__(self, tokenizer: Any, words: str, seed: int = 0) -> None:
        self._tokenizer = tokenizer
        self._overhead = len(tokenizer.encode(""))  # special tokens every text gets
        candidates = sorted({w for w in words.split() if w.isalpha()})
        self._words = [w for w in candidates if len(tokenizer.encode(" " + w, add_special_tokens=False)) == 1]
        if len(self._words) < 16:
            raise ValueError(f"words: only {len(self._words)} single-token words; need at least 16")
        self._rng = np.random.default_rng(seed)

    def text(self, num_tokens: int) -> str:
        """A fresh random text of exactly ``num_tokens`` tokens (special tokens included); a
        prompt no longer than the special tokens gets one word (a prompt needs some text)."""
        if num_tokens < 1:
            raise ValueError(f"num_tokens: must be >= 1 (got {num_tokens})")
        k = max(1, num_tokens - self._overhead)
        picks = self._rng.integers(0, len(self._words), size=k)
        text = "".join(" " + self._words[i] for i in picks)
        got = len(self._tokenizer.encode(text))
        if got != k + self._overhead:
            raise RuntimeError(f"prompt: {got} tokens instead of {k + self._overhead}; the tokenizer merges words")
        return text


@dataclass(frozen=True)
class Replay:
    """What the consumer of the engine received for each request of one replayed trace."""

    token_times: list[np.ndarray]  # receive time of each token, s after the request's submission
    submitted: np.ndarray  # submission, s after the trace's origin (wall clock)
    submit_lag: np.ndarray  # submission minus planned arrival, s
    num_preemptions: np.ndarray  # per request, as the engine's final event reports it
    finish_reasons: list[str]
    wall_s: float  # from the trace's origin to the last final event


async def replay(engine: Any, trace: Sequence[TraceRequest], prompts: Sequence[str], tag: str) -> Replay:
    """Submit every request of ``trace`` at its arrival time (wall clock, from now) and collect
    its token events until each stream ends; one task per request."""
    from andes.engines.base import EngineRequest

    clock = engine.clock
    origin = clock()

    async def one(i: int, r: TraceRequest) -> tuple[np.ndarray, float, int, str]:
        wait = origin + r.arrival - clock()
        if wait > 0:
            await asyncio.sleep(wait)
        arrival = clock()
        times: list[float] = []
        final = None
        request = EngineRequest(f"{tag}-{i}", ttft=r.ttft, tds=r.tds, max_tokens=r.output_tokens,
                                prompt=prompts[i], arrival=arrival, sampling={"ignore_eos": True})
        async for event in engine.submit(request):
            times += [event.time - arrival] * len(event.token_ids)
            if event.is_final:
                final = event
        reason = final.finish_reason if final is not None else "error"
        return np.asarray(times), arrival - origin, final.num_preemptions if final else 0, reason

    results = await asyncio.gather(*(one(i, r) for i, r in enumerate(trace)))
    wall = clock() - origin
    submitted = np.array([s for _, s, _, _ in results])
    return Replay(token_times=[t for t, _, _, _ in results], submitted=submitted,
                  submit_lag=submitted - np.array([r.arrival for r in trace]),
                  num_preemptions=np.array([p for _, _, p, _ in results], dtype=np.int64),
                  finish_reasons=[f for _, _, _, f in results], wall_s=wall)


@dataclass(frozen=True)
class ClosedLoopRate:
    """A saturating closed loop's measured rate: output tokens received per second in the window."""

    streams: int
    window_s: float
    tokens: int  # output tokens received inside the window
    requests_finished: int  # requests whose last token came inside the window
    mean_output_tokens: float  # of the requests the loop drew from

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.window_s

    @property
    def requests_per_s(self) -> float:
        """The token rate in requests of the population's mean output length."""
        return self.tokens_per_s / self.mean_output_tokens


async def closed_loop_rate(engine: Any, requests: Sequence[TraceRequest], prompts: Sequence[str], *,
                           streams: int, warmup_s: float, window_s: float, tag: str) -> ClosedLoopRate:
    """Keep ``streams`` requests in the engine (a finished one replaced at once, drawn in order
    from ``requests``, cycling) and count the output tokens received in ``[warmup_s, warmup_s +
    window_s]``. Streams still open at the end are aborted (the engine is left idle)."""
    from andes.engines.base import EngineRequest

    clock = engine.clock
    start = clock()
    t0, t1 = start + warmup_s, start + warmup_s + window_s
    counter = itertools.count()
    tokens = finished = 0

    async def lane() -> None:
        nonlocal tokens, finished
        while clock() < t1:
            k = next(counter)
            r = requests[k % len(requests)]
            stream = engine.submit(EngineRequest(f"{tag}-{k}", ttft=r.ttft, tds=r.tds, max_tokens=r.output_tokens,
                                                 prompt=prompts[k % len(prompts)], sampling={"ignore_eos": True}))
            try:
                async for event in stream:
                    if t0 <= event.time <= t1:
                        tokens += len(event.token_ids)
                        if event.is_final:
                            finished += 1
                    if event.time > t1:
                        break
            finally:
                await stream.aclose()  # leaving early aborts the request

    await asyncio.gather(*(lane() for _ in range(streams)))
    mean_out = float(np.mean([r.output_tokens for r in requests]))
    return ClosedLoopRate(streams, window_s, tokens, finished, mean_out)


async def wait_until_idle(engine: Any, timeout_s: float = 30.0) -> bool:
    """Wait until the engine holds no request and every KV block is free; False on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        stats = await engine.refresh_stats()
        if stats.num_running + stats.num_waiting == 0 and stats.num_free_blocks == stats.num_total_blocks:
            return True
        await asyncio.sleep(0.05)
    return False
