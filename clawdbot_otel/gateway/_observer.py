"""Telemetry from the gateway protocol's frames: one observer for the proxy and the embedded gateway.

Fed every frame (connection, direction, parsed frame, receive time), it dispatches by event family:

    requests      req/res frames: request spans, gateway_* request metrics, auth and config audit (_requests)
    agent runs    `agent` events and the `agent` res: session, model-call and tool-call spans (_runs)
    automations   `cron` events and `cron.list` answers: scheduler_* metrics, job spans (_automations)
    tasks         `task` events: completions and validation results (_task_events)
    health        `tick` and `health` events: liveness, a failed health check

The trace is parented on the client's incoming `traceparent` when the req frame carries one. Frame
timestamps (`startedAt`, `endedAt`, `ts`, in ms) give span times when they are sane, else the receive
time does. All state is bounded: runs and requests that never finish are ended by `sweep()` with
status timeout, and the de-duplication sets are small LRUs (the same broadcast event reaches every
connection, and must count once).
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from clawdbot_otel import SpanHandle, Telemetry
from clawdbot_otel.collect import GaugeCallbacks, TaskInstrumentation
from clawdbot_otel.frames import EventFrame, Frame, RequestFrame, ResponseFrame

from ._automations import CronTracker
from ._observing import NS, source_error
from ._requests import RequestTracker
from ._requests import untraced_methods as untraced_methods_env
from ._runs import RunTracker
from ._task_events import TaskEvents

__all__ = ["FrameObserver"]


class FrameObserver:
    """Spans, metrics and logs from gateway frames; never alters or delays them.

    Parameters
    ----------
    run_timeout_s:
        a run with no frame for this long is ended with status timeout (an `agent` req's own
        `timeout` param, plus a minute, is used when larger).
    request_timeout_s:
        a request with no response for this long is ended with status timeout.
    finish_grace_s:
        after a run's lifecycle `end`, how long to wait for the final res that carries its usage.
    count_cron:
        count `cron` events into the scheduler metrics (off when the scheduler itself is instrumented).
    count_tasks:
        count `task` event completions into the task metrics (off when an `OpenClawStateWatcher` reads
        the same gateway's task ledger: it sees every task, connected or not).
    count_subagents:
        count sub-agent runs (session keys `agent:<id>:subagent:<uuid>`) into spawn_subagent_*; off when
        a `SpawnQueueWatcher` over the same spawn queue counts them from its response files.
    tasks:
        the `TaskInstrumentation` that `task` events feed (completions, the 24 h completion rate, the
        3-layer validation results); one is made when not given.
    untraced_methods:
        methods whose successful requests make no span (still counted in the request metrics; a failed
        or timed-out one keeps its span); None: CLAWDBOT_OTEL_UNTRACED_METHODS (default `health`).
    """

    def __init__(
        self,
        telemetry: Telemetry,
        *,
        run_timeout_s: float = 900.0,
        request_timeout_s: float = 300.0,
        finish_grace_s: float = 30.0,
        max_runs: int = 10_000,
        max_requests: int = 10_000,
        count_cron: bool = True,
        count_tasks: bool = True,
        count_subagents: bool = True,
        tasks: TaskInstrumentation | None = None,
        untraced_methods: Collection[str] | None = None,
        register_gauges: bool = True,
        clock: Any = time.time_ns,
    ) -> None:
        self.telemetry = telemetry
        self.clock = clock
        run_timeout_ns = int(run_timeout_s * NS)
        self.runs = RunTracker(telemetry, run_timeout_ns=run_timeout_ns, finish_grace_ns=int(finish_grace_s * NS),
                               max_runs=max_runs, count_subagents=count_subagents)
        self.cron = CronTracker(telemetry, run_timeout_ns=run_timeout_ns, clock=clock) if count_cron else None
        untraced = untraced_methods if untraced_methods is not None else untraced_methods_env()
        self.requests = RequestTracker(telemetry, self.runs, self.cron, request_timeout_ns=int(request_timeout_s * NS),
                                       max_requests=max_requests, untraced=untraced)
        self.tasks = tasks if tasks is not None else TaskInstrumentation(telemetry)
        self._own_tasks = tasks is None
        self.task_events = TaskEvents(telemetry, self.tasks, self.runs.session_of, count_completions=count_tasks)
        self.started_ns = clock()
        self.last_tick_ns: int | None = None
        self.last_health_ok: bool | None = None
        self._gauges = GaugeCallbacks(telemetry)
        if register_gauges:
            self._gauges.observe("gateway_throughput_requests_per_second", self._throughput_observation)
            if self.cron is not None:
                self._gauges.observe("scheduler_next_run_seconds", self.cron.next_run_observations)

    # --- public feeding API -----------------------------------------------------------------------
    def connection_opened(self, conn_id: str, headers: Mapping[str, str] | None = None) -> None:
        self.requests.opened(conn_id, headers)

    def connection_closed(self, conn_id: str, code: int | None = None, reason: str = "") -> None:
        try:
            self.requests.closed(conn_id, code, self.clock())
        except Exception:
            self._internal_error()

    def request(self, conn_id: str, frame: RequestFrame, received_ns: int | None = None,
                ids: tuple[int, int] | None = None) -> SpanHandle | None:
        """A client's req frame: starts its request span (returned, for the upstream `traceparent`).

        `ids`: the (trace id, span id) the relay already put in the frame's `traceparent` upstream."""
        try:
            return self.requests.request(conn_id, frame, received_ns or self.clock(), ids)
        except Exception:
            self._internal_error()
            return None

    def frame(self, conn_id: str, direction: str, frame: Frame, received_ns: int | None = None) -> None:
        """Any other frame (`direction` c2s or s2c)."""
        try:
            now = received_ns or self.clock()
            if isinstance(frame, RequestFrame):
                if direction == "c2s":
                    self.requests.request(conn_id, frame, now)
                else:
                    source_error(self.telemetry, "unexpected_s2c_req")
            elif direction != "s2c":  # only the gateway answers and broadcasts
                source_error(self.telemetry,
                             f"unexpected_c2s_{'res' if isinstance(frame, ResponseFrame) else 'event'}")
            elif isinstance(frame, ResponseFrame):
                self.requests.response(conn_id, frame, now)
            else:
                self._on_event(frame, now)
        except Exception:
            self._internal_error()

    def invalid(self, direction: str, reason: str) -> None:
        """A message that is not a frame (it was passed on or answered, never raised)."""
        source_error(self.telemetry, reason)
        if direction == "c2s":
            self.telemetry.increment("gateway_errors_total", {"error_type": "protocol"})

    def sweep(self, now_ns: int | None = None) -> int:
        """End runs and requests that outlived their timeouts; returns how many were ended."""
        now = now_ns or self.clock()
        ended = 0
        try:
            ended += self.runs.sweep(now)
            ended += self.requests.sweep(now)
            if self.cron is not None:
                self.cron.sweep(now)
        except Exception:
            self._internal_error()
        return ended

    def close(self, now_ns: int | None = None) -> None:
        """The gateway stops: end every open run and request now, marked as cut short."""
        now = now_ns or self.clock()
        try:
            self.runs.close(now)
            self.requests.close(now)
            if self.cron is not None:
                self.cron.close()
        except Exception:
            self._internal_error()
        finally:
            self._gauges.close()
            if self._own_tasks:
                self.tasks.close()

    def counted_run(self, run_id: str) -> bool:
        """Whether this run's tokens and cost were counted here (its final response passed through)."""
        return self.runs.counted(run_id)

    def run_traceparent(self, run_id: str) -> str | None:
        """The session span of a live run, as a `traceparent` (for work the run hands on)."""
        session = self.runs.session_of(run_id)
        return session.traceparent if session is not None else None

    def throughput(self, now_ns: int | None = None) -> float:
        """Requests completed per second over the last minute."""
        return self.requests.throughput(now_ns or self.clock())

    @property
    def open_runs(self) -> int:
        return len(self.runs)

    @property
    def open_requests(self) -> int:
        return self.requests.count

    # --- events ----------------------------------------------------------------------------------
    def _on_event(self, frame: EventFrame, now: int) -> None:
        event = frame.event
        payload = frame.payload
        if not isinstance(payload, dict):
            if event != "tick":
                source_error(self.telemetry, "event_without_payload")
            return
        if event == "agent":
            self.runs.event(payload, now)
        elif event == "task":
            self.task_events.event(payload, now)
        elif event == "cron":
            if self.cron is not None:
                self.cron.event(payload, now)
        elif event == "tick":
            self.last_tick_ns = now
        elif event == "health":
            ok = payload.get("ok")
            if ok is False and self.last_health_ok is not False:
                self.telemetry.increment("gateway_errors_total", {"error_type": "runtime"})
                self.telemetry.log("WARN", "gateway", "Gateway health check failed",
                                   metadata={"duration_ms": payload.get("durationMs")})
            self.last_health_ok = ok if isinstance(ok, bool) else None
            self.last_tick_ns = now

    def _throughput_observation(self) -> Iterable[tuple[float, Mapping[str, Any] | None]]:
        return [(self.throughput(), None)]

    def _internal_error(self) -> None:
        """Called from an `except` block: strict (tests, development) re-raises, production counts."""
        if self.telemetry.strict:
            raise  # noqa: PLE0704 - re-raises the exception being handled by the caller
        source_error(self.telemetry, "observer_error")
