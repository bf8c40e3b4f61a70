"""telemetrygen, as `stack build` builds it, drives the real collector the way bench/capacity_bench.py uses it:
every span it reports generating is accepted by the collector, and its log says how many traces it made."""

from __future__ import annotations

import re
import subprocess

import pytest

from clawdbot_otel.stack import StackError, find_telemetrygen

from .conftest import RunningStack, metric_sum

pytestmark = pytest.mark.stack

TRACES, CHILD_SPANS = 40, 4


def _accepted_spans(port: int) -> float:
    return metric_sum(f"http://127.0.0.1:{port}", "otelcol_receiver_accepted_spans")


def test_telemetrygen_traces_reach_the_collector_and_its_log_counts_them(stack: RunningStack) -> None:
    try:
        binary = find_telemetrygen()
    except StackError as exc:
        pytest.fail(str(exc), pytrace=False)
    before = _accepted_spans(stack.ports.collector_metrics)
    done = subprocess.run(
        [str(binary), "traces", "--otlp-endpoint", f"127.0.0.1:{stack.ports.otlp_grpc}", "--otlp-insecure",
         "--traces", str(TRACES), "--rate", "1000", "--child-spans", str(CHILD_SPANS), "--status-code", "Error",
         "--telemetry-attributes", 'bench.attribute_0="value 0 of a span"', "--service", "clawdbot-selftest-telemetrygen"],
        capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    generated = [int(n) for n in re.findall(r'traces generated.*?"traces":\s*(\d+)', done.stderr + done.stdout)]
    assert generated == [TRACES]
    after = _accepted_spans(stack.ports.collector_metrics)
    assert after - before == TRACES * (1 + CHILD_SPANS)
