"""The QoE autoscaling decision (andes.autoscale) on synthetic replica stats, and its Ray adapter
(andes.serve.autoscale) driven with a stand-in for Serve's AutoscalingContext."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from factories import ROUTING_LATENCY, make_stats

from andes.autoscale import (
    AutoscalingStats,
    QoEAutoscalingSettings,
    ScaleState,
    decide,
    stats_from_report,
)
from andes.config import ConfigError
from andes.serve.autoscale import QoEAutoscalingPolicy, replica_stats

# A linear load model and no trend projection keep the arithmetic of most tests by hand.
SETTINGS = QoEAutoscalingSettings(qoe_target=0.95, ample_qoe=0.99, target_load=0.5,
                                  pressure_load=0.8, ample_load=0.4, max_load=1.2, load_exponent=1.0,
                                  pressure_s=10.0, lead_s=0.0, trend_s=30.0, cooldown_s=60.0,
                                  max_step_up=4, max_step_down=1)


def rep(headroom=1.0, load=0.3, **kw) -> AutoscalingStats:
    """A replica's stats; ``load`` is its KV demand (pace demand below it)."""
    fields = dict(headroom=headroom, kv_usage=min(load, 1.0), kv_demand=load, pace_demand=load / 2,
                  num_running=10, num_waiting=0, step_time_s=0.03)
    fields.update(kw)
    return AutoscalingStats(**fields)


def run(stats, n=2, *, starting=0, now=0.0, state=ScaleState(), lo=1, hi=10, settings=SETTINGS):
    return decide(stats, num_replicas=n, num_starting=starting, now=now, state=state,
                  settings=settings, min_replicas=lo, max_replicas=hi)


# ------------------------------------------------------------------------------ scale up


def test_arrivals_projected_below_target_add_a_replica():
    d = run([rep(headroom=0.6), rep(headroom=0.9)], n=2)
    assert (d.num_replicas, d.reason) == (3, "qoe")
    assert d.state.last_scale_up == 0.0


def test_one_replica_with_headroom_is_enough_for_arrivals():
    # The router sends arrivals to the best replica: 0.97 there meets the target.
    assert run([rep(headroom=0.2), rep(headroom=0.97)]).num_replicas == 2


def test_no_second_qoe_step_while_replicas_are_starting():
    d = run([rep(headroom=0.5), rep(headroom=0.5)], n=3, starting=1)
    assert (d.num_replicas, d.reason) == (3, "hold")


def test_persistent_pressure_scales_to_the_load_at_once():
    hot = [rep(load=1.2), rep(load=1.0)]  # mean 1.1 >= 0.8; 2.2 of load at 0.5 each: 5 replicas
    first = run(hot, n=2, now=100.0)
    assert first.num_replicas == 2 and first.state.pressure_since == 100.0
    early = run(hot, n=2, now=105.0, state=first.state)
    assert early.num_replicas == 2
    due = run(hot, n=2, now=110.0, state=early.state)
    assert (due.num_replicas, due.reason) == (5, "pressure")


def test_pressure_that_lapses_restarts_its_clock():
    hot, calm = [rep(load=1.0)], [rep(load=0.4)]
    state = run(hot, n=1, now=0.0).state
    state = run(calm, n=1, now=5.0, state=state).state
    assert state.pressure_since is None
    assert run(hot, n=1, now=12.0, state=state).num_replicas == 1  # 12 s, but only 0 s of it hot


def test_an_overloaded_replica_counts_as_max_load():
    # Its backlog (load 4) stays where it is: 2 x 1.2 of load needs 5 replicas, not 16.
    d = run([rep(load=4.0)] * 2, n=2, now=10.0, state=ScaleState(pressure_since=0.0),
            settings=SETTINGS.model_copy(update={"max_step_up": 100}))
    assert (d.num_replicas, d.reason) == (5, "pressure")


def test_a_scale_up_adds_at_most_max_step_up_and_never_past_max():
    hot, state = [rep(load=1.2)] * 6, ScaleState(pressure_since=0.0)  # needs 15
    assert run(hot, n=6, now=10.0, state=state).num_replicas == 10  # +max_step_up
    assert run(hot, n=6, now=10.0, state=state, hi=8).num_replicas == 8


def test_pressure_counts_starting_replicas_as_capacity():
    # 5 replicas already asked for (3 starting): the load needs 5, so nothing more.
    d = run([rep(load=1.2), rep(load=1.0)], n=5, starting=3, now=20.0, state=ScaleState(pressure_since=0.0))
    assert (d.num_replicas, d.reason) == (5, "hold")


def test_convex_load_model_spreads_load_by_its_exponent():
    # load ~ rate ** 2: two replicas at 0.8 spread to 0.2 each over 4 replicas, not 8.
    convex = SETTINGS.model_copy(update={"load_exponent": 2.0, "target_load": 0.2, "ample_load": 0.1,
                                         "max_step_up": 100})
    d = run([rep(load=0.8)] * 2, n=2, now=10.0, state=ScaleState(pressure_since=0.0), settings=convex)
    assert d.num_replicas == 4


def test_a_rising_load_is_met_ahead_by_its_trend():
    # Demand 0.6 -> 1.0 in 10 s: smoothed trend 0.01/s, so 1.6 projected 60 s ahead, which is
    # pressure (0.8 each) and needs 4 replicas; without the projection the mean is 0.5: hold.
    ahead = SETTINGS.model_copy(update={"lead_s": 60.0, "pressure_s": 0.0})
    state = run([rep(load=0.3)] * 2, now=0.0, settings=ahead).state
    d = run([rep(load=0.5)] * 2, now=10.0, state=state, settings=ahead)
    assert d.state.trend == pytest.approx(0.01)
    assert (d.num_replicas, d.reason) == (4, "pressure")
    now_only = SETTINGS.model_copy(update={"pressure_s": 0.0})
    assert run([rep(load=0.5)] * 2, now=10.0, state=state, settings=now_only).num_replicas == 2


# ------------------------------------------------------------------------------ scale down


def idle(n):
    return [rep(headroom=1.0, load=0.1)] * n


def test_ample_headroom_scales_down_one_step_after_the_cool_down():
    state = run(idle(3), n=3, now=0.0).state
    assert state.ample_since == 0.0
    assert run(idle(3), n=3, now=59.0, state=state).num_replicas == 3
    d = run(idle(3), n=3, now=60.0, state=state)
    assert (d.num_replicas, d.reason) == (2, "ample")
    # The next step waits for a whole cool-down on the smaller count.
    again = run(idle(2), n=2, now=61.0, state=d.state)
    assert again.num_replicas == 2 and again.state.ample_since == 61.0


def test_an_overloaded_replica_does_not_hold_back_the_others_scale_down():
    # Its backlog keeps its headroom low, but arrivals go to the others, which are ample.
    stats = [rep(headroom=0.1, load=2.0)] + idle(5)  # 1.2 + 0.5 over 5 replicas: 0.34 <= 0.4
    d = run(stats, n=6, now=100.0, state=ScaleState(ample_since=0.0))
    assert (d.num_replicas, d.reason) == (5, "ample")


def test_no_scale_down_soon_after_a_scale_up():
    state = ScaleState(last_scale_up=100.0, ample_since=0.0)
    assert run(idle(3), n=3, now=150.0, state=state).num_replicas == 3
    assert run(idle(3), n=3, now=160.0, state=state).num_replicas == 2


@pytest.mark.parametrize("stats, starting", [
    ([rep(headroom=1.0, load=0.1), rep(headroom=0.98, load=0.1), rep(load=0.1)], 0),  # one not ample
    ([rep(load=0.45)] * 3, 0),  # 1.35 of load does not fit 2 replicas at 0.4
    (idle(3), 1),  # a replica is still starting
])
def test_no_scale_down_unless_every_replica_is_ample_and_fewer_would_fit(stats, starting):
    state = ScaleState(ample_since=0.0)
    d = run(stats, n=3, starting=starting, now=1000.0, state=state)
    assert d.num_replicas == 3 and d.state.ample_since is None


def test_scale_down_respects_min_replicas_and_never_reaches_zero():
    state = ScaleState(ample_since=0.0)
    assert run(idle(2), n=2, now=100.0, state=state, lo=2).num_replicas == 2
    assert run(idle(1), n=1, now=100.0, state=state, lo=0).num_replicas == 1


# ------------------------------------------------------------------------------ bounds, no stats


def test_without_stats_the_count_holds_within_bounds():
    assert (run([], n=3).num_replicas, run([], n=3).reason) == (3, "no_stats")
    assert (run([], n=12).num_replicas, run([], n=12).reason) == (10, "bounds")
    assert run([], n=0, lo=1).num_replicas == 1


def test_bad_bounds_are_rejected():
    with pytest.raises(ValueError, match="min_replicas"):
        run([rep()], lo=3, hi=2)


# ------------------------------------------------------------------------------ stats, settings


def test_stats_from_an_idle_and_a_loaded_report():
    quiet = stats_from_report(make_stats(num_running=2, ahead_s=5.0), ROUTING_LATENCY)
    busy = stats_from_report(make_stats(num_running=200, context=400, num_waiting=50, age=8.0),
                             ROUTING_LATENCY)
    assert quiet.headroom > 0.95 and quiet.load < 0.1
    assert busy.headroom < quiet.headroom and busy.kv_demand > 1.0
    assert busy.kv_usage == 1.0 and (busy.num_running, busy.num_waiting) == (200, 50)


def test_metrics_round_trip_and_missing_metrics():
    stats = rep(headroom=0.7, load=1.3, num_waiting=4)
    metrics = stats.as_metrics()
    assert all(k.startswith("andes_") and isinstance(v, float) for k, v in metrics.items())
    assert AutoscalingStats.from_metrics({**metrics, "ray_other": 1.0}) == stats
    del metrics["andes_headroom"]
    assert AutoscalingStats.from_metrics(metrics) is None


@pytest.mark.parametrize("kwargs, field", [
    ({"qoe_target": 0.99, "ample_qoe": 0.9}, "ample_qoe"),
    ({"target_load": 0.9, "pressure_load": 0.5, "ample_load": 0.2}, "pressure_load"),
    ({"target_load": 0.5, "ample_load": 0.5}, "ample_load"),
    ({"cooldown": 5}, "cooldown"),
    ({"max_step_up": 0}, "max_step_up"),
])
def test_bad_settings_name_their_field(kwargs, field):
    with pytest.raises(ConfigError, match=rf"policy_kwargs.*{field}"):
        QoEAutoscalingPolicy(**kwargs)


# ------------------------------------------------------------------------------ the Ray adapter


def context(metrics, *, running=("a", "b"), target=2, state=None, now=0.0):
    """What Serve's controller hands a policy (the fields the adapter reads)."""
    return SimpleNamespace(
        deployment_name="EngineReplica", aggregated_metrics=metrics, running_replicas=list(running),
        target_num_replicas=target, current_num_replicas=len(running), current_time=now,
        policy_state=state or {}, capacity_adjusted_min_replicas=1, capacity_adjusted_max_replicas=8)


def by_replica(**stats: AutoscalingStats) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for replica, s in stats.items():
        for name, value in s.as_metrics().items():
            out.setdefault(name, {})[replica] = value
    return out


def test_adapter_reads_only_running_replicas_with_complete_metrics():
    metrics = by_replica(a=rep(headroom=0.5), b=rep(headroom=0.6), gone=rep(headroom=1.0))
    del metrics["andes_kv_usage"]["b"]
    assert replica_stats(metrics, ["a", "b"]) == [rep(headroom=0.5)]
    assert replica_stats(None, ["a"]) == []


def test_adapter_decides_and_carries_its_state_through_serve():
    policy = QoEAutoscalingPolicy(pressure_s=10.0, target_load=0.5, pressure_load=0.8, ample_load=0.3,
                                  load_exponent=1.0)
    hot = by_replica(a=rep(load=1.0), b=rep(load=1.0))
    n, state = policy(context(hot, now=0.0))
    assert n == 2 and state["andes_pressure_since"] == 0.0
    # Serve merges its own keys into the state it passes back.
    n, state = policy(context(hot, now=10.0, state={**state, "ray_internal": 1}))
    assert n == 4 and state["andes_last_scale_up"] == 10.0
    assert policy(context({}, target=4, running=("a", "b")))[0] == 4  # starting, no stats: hold
