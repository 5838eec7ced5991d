"""The load shape: seeded open-loop arrivals (Poisson, Gamma, cyclic bursts, trace replay).

A ``LoadTestShape`` sets how many users run; the request rate comes from the shared arrival
schedule the shape owns (``andes.loadgen.schedule``): users take the next request in arrival
order and send it when it is due, so the offered rate is the schedule's whatever the server
does. Each tick (once a second) the shape grows the pool to cover the open requests plus those
due in the next few seconds, and ends the test when every request finished (or the drain
timeout after the last arrival passed).

Options (added to Locust's command line; all seeded, all validated at start):

    --arrivals poisson|gamma|burst|trace   --rate R (req/s)   --duration S   --seed N
    --cv C (gamma)   --intensity I --burst-fraction F --period P (burst)   --trace-file FILE
    --voice-share V   --mean-prompt-tokens N   --mean-output-tokens N   --max-context N
    --drain-timeout S   --max-users N

    --part K --parts N   --start-at UNIX_TIME

Several generator processes (on one machine or several) split one schedule: run N headless
processes with ``--parts N``, ``--part 0`` .. ``N-1`` and the same ``--start-at`` (the
wall-clock time arrival 0 is due, a little in the future); each sends every N-th request, at
its due time, and their ``--records`` files together are the whole run (``andes capacity
--processes N`` does this). Locust's own ``--processes`` and ``--master``/``--worker`` modes
run the shape on the master only, so they are not supported: every worker would need the
schedule.
"""

from __future__ import annotations

import sys
import time

from locust import LoadTestShape, events

from andes.loadgen.schedule import (ARRIVAL_KINDS, ArrivalSchedule, PoolSettings, ScheduleSpec, build_trace,
                                    pool_size)
from andes.workload import TraceFormatError

__all__ = ["ArrivalShape"]

SPAWN_RATE = 100.0
"""Users started per second when the pool grows (greenlets: cheap)."""
START_LEAD_S = 1.0
"""Arrival 0 is this long after the first tick, so the first users exist when it is due."""


@events.init_command_line_parser.add_listener
def _add_arguments(parser) -> None:
    group = parser.add_argument_group("Andes arrivals", "open-loop arrival schedule (loadtests/shapes.py)")
    group.add_argument("--arrivals", choices=ARRIVAL_KINDS, default="poisson", help="arrival process")
    group.add_argument("--rate", type=float, default=1.0, help="mean request rate, req/s (default 1)")
    group.add_argument("--duration", type=float, default=60.0,
                       help="seconds of arrivals (default 60; 0 with --arrivals trace: the whole file)")
    group.add_argument("--seed", type=int, default=0, help="seed of arrivals, lengths and classes")
    group.add_argument("--cv", type=float, default=2.0, help="gamma: coefficient of variation of gaps")
    group.add_argument("--intensity", type=float, default=2.0, help="burst: in-burst / base rate")
    group.add_argument("--burst-fraction", type=float, default=0.35, help="burst: share of each period")
    group.add_argument("--period", type=float, default=60.0, help="burst: period, s")
    group.add_argument("--trace-file", default=None, help="trace: JSONL trace to replay")
    group.add_argument("--voice-share", type=float, default=0.0, help="share of voice-class requests")
    group.add_argument("--mean-prompt-tokens", type=float, default=161.31)
    group.add_argument("--mean-output-tokens", type=float, default=337.99)
    group.add_argument("--max-context", type=int, default=2048)
    group.add_argument("--drain-timeout", type=float, default=300.0,
                       help="after the last arrival, wait at most this long for open streams (s)")
    group.add_argument("--max-users", type=int, default=5000, help="cap on concurrent users")
    group.add_argument("--part", type=int, default=0, help="this process's share of the schedule (0-based)")
    group.add_argument("--parts", type=int, default=1, help="generator processes splitting the schedule")
    group.add_argument("--start-at", type=float, default=None,
                       help="wall-clock time (Unix s) arrival 0 is due; the same in every part")


def spec_from_options(options) -> ScheduleSpec:
    """The schedule the command line asks for (``ValueError`` names the bad option)."""
    duration = options.duration if not (options.arrivals == "trace" and options.duration == 0) else None
    return ScheduleSpec(kind=options.arrivals, rate=options.rate, duration_s=duration, seed=options.seed,
                        cv=options.cv, intensity=options.intensity, burst_fraction=options.burst_fraction,
                        period_s=options.period, voice_share=options.voice_share,
                        mean_prompt_tokens=options.mean_prompt_tokens,
                        mean_output_tokens=options.mean_output_tokens, max_context=options.max_context,
                        trace_file=options.trace_file)


class ArrivalShape(LoadTestShape):
    """Keeps enough users to send every scheduled request on time; stops when all are done."""

    clock = staticmethod(time.monotonic)

    def __init__(self) -> None:
        self.schedule: ArrivalSchedule | None = None  # set first: the base __init__ calls reset_time
        self.trace = []
        self.settings = PoolSettings()
        self.num_users = 0
        self.part, self.parts, self.start_at = 0, 1, None
        super().__init__()

    def configure(self, spec: ScheduleSpec, settings: PoolSettings, *, part: int = 0, parts: int = 1,
                  start_at: float | None = None) -> None:
        """Build the schedule, or this process's share of it (before the test starts)."""
        self.trace = build_trace(spec)
        self.part, self.parts, self.start_at = part, parts, start_at
        self.schedule = ArrivalSchedule(self.trace, part, parts)
        self.settings = settings

    def reset_time(self) -> None:
        """Locust calls this at every start: a new run replays the schedule from its beginning."""
        super().reset_time()
        if self.schedule is not None:
            self.schedule = ArrivalSchedule(self.trace, self.part, self.parts)
            self.num_users = 0

    def tick(self):
        if self.schedule is None:
            raise RuntimeError("ArrivalShape has no schedule: run it with loadtests/locustfile.py")
        now = self.clock()
        if not self.schedule.is_started:
            lead = START_LEAD_S if self.start_at is None else self.start_at - time.time()
            self.schedule.start(now + lead)
        users = pool_size(self.schedule, now, self.num_users, self.settings)
        if users is None:
            return None
        self.num_users = users
        return users, SPAWN_RATE


@events.init.add_listener
def _configure(environment, **_kwargs) -> None:
    shape = environment.shape_class
    options = environment.parsed_options
    if not isinstance(shape, ArrivalShape) or options is None:
        return
    try:
        spec = spec_from_options(options)
        shape.configure(spec, PoolSettings(drain_timeout_s=options.drain_timeout, max_users=options.max_users),
                        part=options.part, parts=options.parts, start_at=options.start_at)
    except (ValueError, OSError, TraceFormatError) as exc:
        sys.stderr.write(f"locust: bad arrival options: {exc}\n")
        sys.exit(2)
