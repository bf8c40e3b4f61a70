"""Resource utilisation: observed gauges read through psutil at export time, nothing between exports.

    ResourceSampler(telemetry, paths=["~/clawd"], process_name="gateway", gateway=True)

* resource_memory_used_bytes{process} (RSS), resource_cpu_percent{process}, resource_memory_total;
* resource_disk_used_bytes{path}, resource_disk_free_bytes{path} for each configured path (a path
  that does not exist yet is skipped until it does);
* with `gateway=True`, for the same process: gateway_uptime_seconds, gateway_memory_bytes{type=rss|vms},
  gateway_cpu_percent. `uptime` replaces this process's uptime by another source (the proxy reports
  the upstream gateway's, from its handshake and ticks; None while it is unreachable).

CPU percent is psutil's: the process's CPU time since the previous reading over the wall time
between them, 100 = one core fully busy (as `top` shows it; more than 100 on several cores). The
first reading is primed in the constructor, so no call ever sleeps to measure an interval.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence

import psutil

from clawdbot_otel import Telemetry

from ._files import SourceErrors
from ._gauges import GaugeCallbacks

__all__ = ["ResourceSampler"]

Reading = Iterable[tuple[float, dict[str, str] | None]]


class ResourceSampler:
    """Registers the resource gauges for one process and some paths (see the module docstring)."""

    __slots__ = ("_errors", "_gateway_cpu", "_gauges", "_missing", "_process", "_process_cpu", "_uptime_source",
                 "gateway", "now", "paths", "process_name", "started_at")

    def __init__(
        self,
        telemetry: Telemetry,
        *,
        paths: Sequence[str | os.PathLike[str]] = ("~",),
        process_name: str | None = None,
        pid: int | None = None,
        gateway: bool = False,
        started_at: float | None = None,
        uptime: Callable[[], float | None] | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        """`pid`: the process to sample (default: this one). `started_at`: the gateway's start (epoch s),
        default the process's creation time."""
        self._process = psutil.Process(pid)
        self.process_name = process_name or self._process.name()
        self.paths = [os.path.abspath(os.path.expanduser(os.fspath(p))) for p in paths]
        self.gateway = gateway
        self.now = now
        self.started_at = self._process.create_time() if started_at is None else started_at
        self._errors = SourceErrors(telemetry, "resources", "resources")
        self._missing: set[str] = set()  # problems said once, until they go away
        # psutil keeps the previous CPU reading per Process object: one object per gauge, so the
        # two gauges do not steal each other's interval. cpu_percent(None) primes without sleeping.
        self._process_cpu = psutil.Process(self._process.pid)
        self._process_cpu.cpu_percent(None)
        self._gateway_cpu: psutil.Process | None = None
        self._uptime_source = uptime
        gauges = self._gauges = GaugeCallbacks(telemetry)
        gauges.observe("resource_memory_used_bytes", self._memory_used)
        gauges.observe("resource_cpu_percent", self._cpu)
        gauges.observe("resource_memory_total", self._memory_total)
        gauges.observe("resource_disk_used_bytes", self._disk_used)
        gauges.observe("resource_disk_free_bytes", self._disk_free)
        if gateway:
            self._gateway_cpu = psutil.Process(self._process.pid)
            self._gateway_cpu.cpu_percent(None)
            gauges.observe("gateway_uptime_seconds", self._uptime)
            gauges.observe("gateway_memory_bytes", self._gateway_memory)
            gauges.observe("gateway_cpu_percent", self._gateway_cpu_percent)

    def close(self) -> None:
        """Stop reporting."""
        self._gauges.close()

    def _once(self, key: str, reason: str, detail: str) -> None:
        if key not in self._missing:
            self._missing.add(key)
            self._errors.report(reason, key, detail)

    def _process_reading(self, read: Callable[[], Reading]) -> Reading:
        try:
            readings = list(read())
        except (psutil.NoSuchProcess, psutil.AccessDenied) as exc:
            self._once(f"pid {self._process.pid}", "unreadable", f"{type(exc).__name__}: {exc}")
            return []
        self._missing.discard(f"pid {self._process.pid}")
        return readings

    def _memory_used(self) -> Reading:
        return self._process_reading(
            lambda: [(float(self._process.memory_info().rss), {"process": self.process_name})])

    def _cpu(self) -> Reading:
        return self._process_reading(
            lambda: [(self._process_cpu.cpu_percent(None), {"process": self.process_name})])

    def _memory_total(self) -> Reading:
        return [(float(psutil.virtual_memory().total), None)]

    def _disk(self, field: str) -> Reading:
        readings: list[tuple[float, dict[str, str] | None]] = []
        for path in self.paths:
            try:
                usage = psutil.disk_usage(path)
            except FileNotFoundError:
                if path not in self._missing:  # not an error: created later, e.g. ~/clawd
                    self._missing.add(path)
                    self._errors.note(f"Disk path {path} does not exist (yet); skipped", path)
                continue
            except OSError as exc:
                self._once(path, "unreadable", f"disk usage: {exc.strerror or exc}")
                continue
            self._missing.discard(path)
            readings.append((float(getattr(usage, field)), {"path": path}))
        return readings

    def _disk_used(self) -> Reading:
        return self._disk("used")

    def _disk_free(self) -> Reading:
        return self._disk("free")

    def _uptime(self) -> Reading:
        if self._uptime_source is not None:
            value = self._uptime_source()
            return [] if value is None else [(max(0.0, value), None)]
        return [(max(0.0, self.now() - self.started_at), None)]

    def _gateway_memory(self) -> Reading:
        def read() -> Reading:
            info = self._process.memory_info()
            return [(float(info.rss), {"type": "rss"}), (float(info.vms), {"type": "vms"})]

        return self._process_reading(read)

    def _gateway_cpu_percent(self) -> Reading:
        cpu = self._gateway_cpu
        return self._process_reading(lambda: [(cpu.cpu_percent(None), None)] if cpu is not None else [])
