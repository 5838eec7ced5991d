"""Reader-aware coalescing (andes.serve.coalesce) on a virtual clock: holds never cost QoE."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest

from andes.config import ConfigError, GatewayConfig, ServeConfig, load_config
from andes.engines.base import EngineRequest
from andes.engines.sim import VirtualClock
from andes.qoe import DigestState
from andes.serve.coalesce import Coalescer, HoldRule, hold_rule
from andes.serve.host import EngineHost


def simulate(ready: list[float], tds: float, rule: HoldRule) -> list[tuple[float, int]]:
    """Drive a ``Coalescer`` as the replica does, on a virtual clock: each token is offered when
    it is ready, and a pending hold is re-checked at its deadline. The last token is final.
    Returns ``(send time, tokens)`` per event."""
    coalescer, sends, i = Coalescer(tds, rule), [], 0
    while i < len(ready):
        deadline = coalescer.deadline()
        if deadline < ready[i]:  # the hold runs out before the next token is ready
            now = max(deadline, sends[-1][0] if sends else -math.inf)
            assert coalescer.due(now)
        else:
            now = ready[i]
            coalescer.add(1, now)
            i += 1
            if not coalescer.due(now, final=i == len(ready)):
                continue
        sends.append((now, coalescer.held))
        coalescer.sent(now)
    return sends


def per_token(sends: list[tuple[float, int]]) -> list[float]:
    return [t for t, n in sends for _ in range(n)]


def digest_times(arrivals: list[float], ttft: float, tds: float) -> list[float]:
    state, out = DigestState(ttft, tds), []
    for t in arrivals:
        state.add_token(t)
        out.append(state.last_digest)
    return out


def engine_timelines(seed: int) -> list[list[float]]:
    """Ready times of one stream each: fast, reader-paced, slower than the reader, bursty with
    stalls (a preempted request), jittery."""
    rng = np.random.default_rng(seed)
    n = 120
    fast = 0.3 + np.arange(n) * 0.05
    paced = 0.3 + np.arange(n) / 4.8
    slow = 0.3 + np.arange(n) * 0.4
    stalls = 0.3 + np.cumsum(np.where(rng.random(n) < 0.05, rng.uniform(1, 6, n), 0.02))
    jitter = 0.3 + np.cumsum(rng.exponential(0.1, n))
    return [list(map(float, t)) for t in (fast, paced, slow, stalls, jitter)]


RULES = [HoldRule(0.5, 0.5, 16), HoldRule(0.2, 1.0, 64), HoldRule(1.0, 2.0, 4), HoldRule(0.0, 0.0, 16)]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("rule", RULES, ids=str)
def test_holds_never_delay_a_token_past_its_digest_time(seed, rule):
    tds, ttft = 4.8, 1.0
    for ready in engine_timelines(seed):
        sends = simulate(ready, tds, rule)
        sent = per_token(sends)
        assert len(sent) == len(ready) and sent == sorted(sent)
        assert all(s >= r for s, r in zip(sent, ready))
        assert sent[0] == ready[0], "the first token is never held"
        assert sends[-1][0] == ready[-1], "the final event flushes at once"
        assert all(s - r <= rule.max_hold_s + 1e-9 for s, r in zip(sent, ready))
        assert all(n <= rule.max_tokens for _, n in sends)
        # Whatever the path's delay, up to the low-water mark: each token reaches the reader no
        # later than its digest time had nothing been held, so every digest time (and QoE) is
        # the same as without holds.
        for delay in (0.0, rule.low_water_s):
            held = digest_times([s + delay for s in sent], ttft, tds)
            unheld = digest_times([r + delay for r in ready], ttft, tds)
            assert all(s + delay <= c + 1e-9 for s, c in zip(sent, unheld))
            assert held == pytest.approx(unheld, abs=1e-9)


def test_a_fast_engine_sends_far_fewer_events_and_a_paced_one_is_never_held():
    fast, paced = engine_timelines(0)[:2]
    rule = HoldRule(0.5, 0.5, 16)
    assert len(simulate(fast, 4.8, rule)) <= len(fast) / 5
    # At the reader's pace the buffer never exceeds one token: nothing can wait.
    assert len(simulate(paced, 4.8, rule)) == len(paced)


def test_deadline_is_the_earlier_of_max_hold_and_low_water():
    c = Coalescer(tds=5.0, rule=HoldRule(low_water_s=0.5, max_hold_s=10.0, max_tokens=100))
    assert c.deadline() == math.inf and not c.due(0.0)
    c.add(1, 0.0)
    assert c.deadline() == -math.inf and c.due(0.0)  # the first token leaves at once
    c.sent(0.0)
    c.add(9, 0.05)  # sent 1 token at 0 -> digested by 0.2; refill due at 0.2 - 0.5 < now
    assert c.due(0.05)
    c.sent(0.05)  # 10 tokens: last digest 1.8, projected buffer at 0.1 = 1.9 s
    assert c.buffered_s(0.1) == pytest.approx(1.9)
    c.add(1, 0.1)
    assert c.deadline() == pytest.approx(1.5) and not c.due(1.49) and c.due(1.5)
    assert c.due(0.2, final=True)


def test_settings_are_validated_and_a_request_can_opt_out():
    config = GatewayConfig()
    assert config.coalesce.enabled
    rule = hold_rule(config)
    assert rule == HoldRule(config.coalesce.low_water_s, config.coalesce.max_hold_s,
                            config.max_tokens_per_event)
    assert hold_rule(config, requested=False) is None
    off = GatewayConfig(coalesce={"enabled": False})
    assert hold_rule(off) is None and hold_rule(off, requested=True) is None
    with pytest.raises(ConfigError, match=r"args\.gateway\.coalesce\.max_hold_s"):
        load_config(ServeConfig, {"gateway": {"coalesce": {"max_hold_s": -1.0}}}, where="args")
    with pytest.raises(ConfigError, match=r"args\.gateway\.coalesce\.low_water"):
        load_config(ServeConfig, {"gateway": {"coalesce": {"low_water": 1.0}}}, where="args")
    with pytest.raises(ValueError, match="max_tokens"):
        HoldRule(0.5, 0.5, 0)


def _stream(rule: HoldRule | None) -> list:
    async def main():
        clock = VirtualClock()
        host = EngineHost({"policy": {"name": "fcfs"}}, clock=clock, sleep=clock.sleep)
        request = EngineRequest("r", ttft=1.0, tds=4.8, max_tokens=80, num_prompt_tokens=8)
        out = [(clock(), e) async for e in host.generate(request, 16, hold=rule)]
        assert host.num_open() == 0
        return out
    return asyncio.run(main())


def test_host_holds_tokens_the_reader_does_not_need_yet():
    plain = _stream(None)
    held = _stream(HoldRule(0.5, 0.5, 16))
    tokens = [t for _, e in held for t in e.token_ids]
    assert tokens == list(range(80))
    assert len(held[0][1].token_ids) == 1 and held[-1][1].is_final
    assert len(held) < len(plain) / 3
    # The simulated engine (llama2-13b profile) is far faster than 4.8 tokens/s: QoE stays 1.
    arrivals = [t for t, e in held for _ in e.token_ids]
    digest = DigestState(1.0, 4.8)
    for t in arrivals:
        digest.add_token(t)
    assert digest.qoe() == pytest.approx(1.0)
