"""Locust load test of an Andes gateway: streamed completions scored by the reader's QoE.

Each user takes the next request of the shared arrival schedule (``shapes.ArrivalShape``),
waits until it is due, sends it as a streaming ``POST /v1/completions`` with the request's own
expectations (``ttft``, ``tds``, ``service_class`` from ``andes.workload``), reads the stream
to its end and scores it with ``andes.qoe`` from the times chunks reached the client (the
client buffer's digest times; see ``andes.loadgen.client``).

Statistics rows (Locust's "response time" column carries each row's value; its unit is the
row's, not always ms):

    type        name                        value
    POST        /v1/completions [text]      whole stream, send to [DONE], ms; failure: HTTP
                                            error, error event, truncated or cut-off stream
    TTFT        text | voice                time to first token at the client, ms
    TDS         text | voice                delivered tokens/s x 1000 (first to last token)
    QOE         text | voice                client-side QoE x 1000 (failed requests count too)
    QOE_SERVER  text | voice                the gateway's reported QoE x 1000
    LAG         send                        how late the request left against its schedule, ms

The mean of a QOE row over the run (``total_response_time / num_requests`` in the
``--json-file`` output) is the exact mean QoE x 1000; percentiles are bucketed by Locust to two
significant digits. ``--records FILE`` also writes one JSON line per request (token times,
both QoEs, status) for exact distributions (``andes capacity`` reads it).

Run by hand (a deployment on :8000; options of the schedule: ``shapes.py``):

    locust -f loadtests/locustfile.py --headless --host http://127.0.0.1:8000 \
        --arrivals poisson --rate 2 --duration 60 --seed 0 --json-file out/stats
"""

from __future__ import annotations

import json
import math
import time

import gevent
import requests
from gevent import GreenletExit
from locust import HttpUser, events, task

from andes.loadgen.client import StreamMeter, StreamOutcome, request_body
from andes.loadgen.schedule import Slot
from shapes import ArrivalShape  # noqa: F401  (Locust picks the shape up from this module)

COMPLETIONS = "/v1/completions"
IDLE_POLL_S = 1.0
TIMEOUT_S = (10.0, 600.0)
"""(connect, read) timeouts; the read timeout bounds a silent gap inside a stream."""
HEADERS = {"Accept": "text/event-stream", "Connection": "close"}
"""A fresh connection per stream: users idle between requests for longer than servers keep
idle connections open (uvicorn: 5 s), and reusing one the server is closing fails the request
("Remote end closed connection without response") through no fault of the server."""


@events.init_command_line_parser.add_listener
def _add_arguments(parser) -> None:
    group = parser.add_argument_group("Andes client", "streamed completions (loadtests/locustfile.py)")
    group.add_argument("--records", default=None, help="write one JSON line per request to this file")
    group.add_argument("--model", default=None, help="model name to send (default: the server's)")


class Recorder:
    """Appends one JSON line per finished request to ``--records`` (if given)."""

    def __init__(self, path: str | None) -> None:
        self.file = open(path, "w", encoding="utf-8") if path else None

    def write(self, outcome: StreamOutcome) -> None:
        if self.file is not None:
            self.file.write(json.dumps(outcome.to_record(), allow_nan=False) + "\n")
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


class StreamingReader(HttpUser):
    """A reader of streamed completions; requests come from the shape's arrival schedule."""

    recorder = Recorder(None)  # replaced at init when --records is given
    model: str | None = None

    def wait_time(self) -> float:
        return 0.0  # pacing comes from the schedule, not from think time

    @task
    def read_next(self) -> None:
        schedule = self.environment.shape_class.schedule
        slot = schedule.claim()
        if slot is None:  # everything is claimed: idle until the shape ends the test
            gevent.sleep(IDLE_POLL_S)
            return
        try:
            gevent.sleep(max(0.0, slot.due - time.monotonic()))
            self._stream(slot, schedule.origin)
        finally:
            schedule.release()

    def _stream(self, slot: Slot, origin: float) -> None:
        sent_clock = time.monotonic()
        lag_s = max(0.0, sent_clock - slot.due)
        _fire(self.environment.events, "LAG", "send", lag_s * 1000.0)
        label = slot.request.cls or "-"
        meter = StreamMeter(slot.request, slot.index, sent_clock - origin, lag_s, sent_clock)
        num_bytes, outcome = 0, None
        with self.client.post(COMPLETIONS, json=request_body(slot.request, self.model), stream=True,
                              catch_response=True, name=f"{COMPLETIONS} [{label}]", timeout=TIMEOUT_S,
                              headers=HEADERS) as response:
            try:
                if response.status_code != 200:
                    outcome = meter.finish(time.monotonic(), http_error=_http_error(response))
                else:
                    response.encoding = "utf-8"  # SSE is UTF-8 (RFC 8895); lines come as str
                    for line in response.iter_lines(decode_unicode=True):
                        meter.feed(line, time.monotonic())
                        num_bytes += len(line) + 1
                    outcome = meter.finish(time.monotonic())
            except requests.RequestException as exc:
                outcome = meter.finish(time.monotonic(), http_error=f"stream broke: {exc!r}")
            except GreenletExit:  # the test ended (drain timeout) mid-stream
                outcome = meter.finish(time.monotonic(), cut_off=True)
                raise
            finally:
                if outcome is not None:
                    self._report(outcome, response, num_bytes)

    def _report(self, outcome: StreamOutcome, response, num_bytes: int) -> None:
        response.request_meta["response_time"] = outcome.duration_s * 1000.0
        response.request_meta["response_length"] = num_bytes
        if outcome.status == "finished":
            response.success()
        else:
            response.failure(outcome.error)
        label, hooks = outcome.cls or "-", self.environment.events
        if outcome.token_times.size:
            _fire(hooks, "TTFT", label, outcome.measured_ttft * 1000.0)
        if math.isfinite(outcome.delivered_tds):
            _fire(hooks, "TDS", label, outcome.delivered_tds * 1000.0)
        _fire(hooks, "QOE", label, outcome.qoe * 1000.0)
        if math.isfinite(outcome.server_qoe):  # the final chunk came
            _fire(hooks, "QOE_SERVER", label, outcome.server_qoe * 1000.0)
        self.recorder.write(outcome)


def _fire(hooks, kind: str, name: str, value: float) -> None:
    """One custom statistics row entry (never a failure: failures belong to the POST row)."""
    hooks.request.fire(request_type=kind, name=name, response_time=value, response_length=0,
                        exception=None, context={})


def _http_error(response) -> str:
    try:
        text = response.text
    except requests.RequestException as exc:
        text = repr(exc)
    status = response.status_code or "no response"
    return f"HTTP {status}: {(text or str(getattr(response, 'error', '')))[:200]}"


@events.init.add_listener
def _open_records(environment, **_kwargs) -> None:
    options = environment.parsed_options
    if options is not None:
        StreamingReader.recorder = Recorder(options.records)
        StreamingReader.model = options.model


@events.quit.add_listener
def _close_records(**_kwargs) -> None:
    # ``quit`` comes after Locust stopped the users, so streams cut off at the end are recorded.
    StreamingReader.recorder.close()
