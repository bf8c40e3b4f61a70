"""What redaction costs on the hot path, beside the unredacted path, in one run.

    .venv/bin/python bench/redaction_bench.py [--n 20000] [--repeat 7]

- text:     `Redactor.scrub` of a typical log message, without and with a secret, vs returning it as it is
- log line: `Telemetry.log` (JSON line to a sink that drops it) with the redactor vs with one that hides
            nothing (`NoRedaction`), for a message without and with a secret (metadata: two ids)
- span:     the span exporter's pass (`redact_span`) over a finished tool span (9 attributes), without and
            with a secret in its status and exception event, vs handing the span on as it is; and the
            same beside what making that span costs the host (`tool_call_span` start + end)

Best-of-`repeat` wall time per call; the sides alternate within each repetition. Ratios are
redacted / unredacted (1.00x = free).

On a shared, loaded machine wall times wander; count instructions instead: run one side of one case
alone under callgrind at two sizes and take the difference per call (setup cancels out):

    for case in scrub-plain scrub-secret log-plain log-secret span-plain span-secret; do
      for side in base ours; do for n in 500 3000; do
        echo "$case $side $n $(valgrind --tool=callgrind --callgrind-out-file=/dev/null \
          .venv/bin/python bench/redaction_bench.py --only $case:$side --n $n 2>&1 | grep -o 'Collected : [0-9]*')"
      done; done
    done
    # instructions per call = (Collected(3000) - Collected(500)) / 2500
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from clawdbot_otel import Redactor, Telemetry
from clawdbot_otel._redact_spans import redact_span

PLAIN = "Job completed for agent main in session agent:main:main after 3 tool calls"
SECRET = "provider refused Authorization: Bearer sk-ant-api03-" + "x" * 40 + "AbCdEf0123456789-_" * 2
METADATA = {"job_name": "coordinator", "run_id": "9f1c2d3e-4b5a-6789-abcd-ef0123456789"}


class NoRedaction(Redactor):
    """The unredacted path: the same pipeline (metadata still capped), no text scrubbed."""

    __slots__ = ()

    def scrub(self, text: str) -> str:
        return text


class DropSink:
    def write(self, line: bytes, level: str, component: str) -> None:
        pass


def per_call_ns(fn: Callable[[], Any], n: int) -> float:
    gc.disable()
    try:
        start = time.perf_counter_ns()
        for _ in range(n):
            fn()
        return (time.perf_counter_ns() - start) / n
    finally:
        gc.enable()


def best_pair(base: Callable[[], Any], ours: Callable[[], Any], n: int, repeat: int) -> tuple[float, float]:
    best_base = best_ours = float("inf")
    for _ in range(repeat):
        best_base = min(best_base, per_call_ns(base, n))
        best_ours = min(best_ours, per_call_ns(ours, n))
    return best_base, best_ours


def tool_span(telemetry: Telemetry, error: str | None) -> None:
    with telemetry.tool_call_span("exec", call_id="toolu_01A2B3C4D5", params={"cmd": "ls -la"}) as span:
        span.set("clawdbot.tool.result_bytes", 512)
        if error is not None:
            span.record_error(RuntimeError(error))


def finished_span(error: str | None) -> ReadableSpan:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tool_span(Telemetry(tracer_provider=provider, log_sinks=[DropSink()]), error)
    (span,) = exporter.get_finished_spans()
    return span


def cases(redactor: Redactor) -> dict[str, tuple[Callable[[], Any], Callable[[], Any]]]:
    """Each case's (unredacted, redacted) call, for `--only`."""
    plain_log = Telemetry(log_sinks=[DropSink()], redactor=NoRedaction())
    redacting_log = Telemetry(log_sinks=[DropSink()], redactor=redactor)
    spans = {"plain": finished_span("exit status 1"), "secret": finished_span(SECRET)}
    out: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {}
    for label, text in (("plain", PLAIN), ("secret", SECRET)):
        out[f"scrub-{label}"] = (lambda t=text: t, lambda t=text: redactor.scrub(t))  # type: ignore[misc]
        out[f"log-{label}"] = (lambda t=text: plain_log.log("INFO", "scheduler", t, metadata=METADATA),  # type: ignore[misc]
                               lambda t=text: redacting_log.log("INFO", "scheduler", t, metadata=METADATA))  # type: ignore[misc]
        span = spans[label]
        out[f"span-{label}"] = (lambda s=span: s, lambda s=span: redact_span(s, redactor))  # type: ignore[misc]
    return out


def row(name: str, base: float, ours: float) -> None:
    print(f"{name:<44} {base:>9.0f} ns {ours:>9.0f} ns {ours / base:>7.2f}x {ours - base:>+8.0f} ns")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--only", metavar="CASE:SIDE", help="run n calls of one side of one case, untimed "
                        "(for callgrind): CASE scrub-plain|scrub-secret|log-plain|log-secret|span-plain|span-secret, "
                        "SIDE base|ours")
    args = parser.parse_args()
    n, repeat = args.n, args.repeat
    redactor = Redactor()
    if args.only:
        case, _, side = args.only.partition(":")
        for _ in range(n):
            cases(redactor)[case][side == "ours"]()
        return
    table = cases(redactor)
    print(f"{'':<44} {'unredacted':>12} {'redacted':>12} {'ratio':>8} {'added':>11}")
    host = Telemetry(tracer_provider=TracerProvider(), log_sinks=[DropSink()])
    making = min(per_call_ns(lambda: tool_span(host, None), n // 4) for _ in range(repeat))
    for key, label in (("scrub-plain", "scrub: text, no secret marker"), ("scrub-secret", "scrub: text with a secret"),
                       ("log-plain", "log line, no secret"), ("log-secret", "log line, with a secret"),
                       ("span-plain", "span export pass, no secret"),
                       ("span-secret", "span export pass, secret in status and exception")):
        base, ours = best_pair(*table[key], n // 4 if key.startswith("span") else n, repeat)
        row(label, base, ours)
        if key.startswith("span"):
            print(f"{'':<44} = {(ours - base) / making:.1%} of making the span on the host ({making:.0f} ns)")

if __name__ == "__main__":
    main()
