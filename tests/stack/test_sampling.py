"""Tail sampling end to end: SDK -> collector (tail_sampling) -> Jaeger, checked trace by trace.

The probabilistic policy of tailsamplingprocessor v0.161.0 (internal/sampling/probabilistic.go) keeps a
trace iff FNV-1a-64(salt || 16 trace-id bytes) <= threshold, salt "default-hash-seed" (no hash_salt in
our config) and threshold = uint64(big.Float(MaxUint64, 64-bit precision) * ratio) (64-bit mantissa,
round-half-even, then truncation). The `usetracestate` feature gate is off by default, and our spans carry
no OTel tracestate anyway, so that hash is what decides. Below is an independent reimplementation used to
predict the exact set of kept traces.
"""

from __future__ import annotations

import http.client
import json
import math
import random
import time
import uuid
from fractions import Fraction

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import Status, StatusCode, set_span_in_context

from clawdbot_otel.stack import start_server, status, stop_server

from .conftest import TWO_TIER_SAMPLERS, ExtraCollector, RunningStack, metric_sum

pytestmark = pytest.mark.stack

N_TRACES = 2000
SEED = 20260224  # the trace ids of the one-collector / two-tier comparison
_KEPT: dict[int, frozenset[int]] = {}  # samplers -> kept trace ids, filled by the parametrised test
SPANS_PER_TRACE = 4
ERROR_EVERY = 10  # traces 0, 10, 20, ... contain one span with status ERROR

_FNV64_OFFSET = 0xCBF29CE484222325
_FNV64_PRIME = 0x100000001B3
_MAX_U64 = 2**64 - 1
_SALT = b"default-hash-seed"


def fnv1a_64(data: bytes) -> int:
    h = _FNV64_OFFSET
    for byte in data:
        h ^= byte
        h = (h * _FNV64_PRIME) & _MAX_U64
    return h


def _round_to_precision(x: Fraction, prec: int) -> Fraction:
    """Round a positive rational to `prec` significant bits, ties to even (big.Float's default mode)."""
    if x == 0:
        return x
    exp = x.numerator.bit_length() - x.denominator.bit_length() - prec
    while x / Fraction(2) ** exp >= 2**prec:
        exp += 1
    while x / Fraction(2) ** exp < 2 ** (prec - 1):
        exp -= 1
    scaled = x / Fraction(2) ** exp
    q, r = divmod(scaled.numerator, scaled.denominator)
    rem = Fraction(r, scaled.denominator)
    if rem > Fraction(1, 2) or (rem == Fraction(1, 2) and q % 2 == 1):
        q += 1
    return q * Fraction(2) ** exp


def sampling_threshold(percentage: float) -> int:
    """calculateThreshold(percentage / 100) of the Go code."""
    product = _round_to_precision(Fraction(_MAX_U64) * Fraction(percentage / 100), 64)
    return min(_MAX_U64, math.floor(product))


def predicted_kept(trace_id: int, percentage: float) -> bool:
    return fnv1a_64(_SALT + trace_id.to_bytes(16, "big")) <= sampling_threshold(percentage)


def test_hash_reimplementation_sanity() -> None:
    # FNV-1a 64 reference values (empty input is the offset basis; "a" from the FNV test vectors).
    assert fnv1a_64(b"") == 0xCBF29CE484222325
    assert fnv1a_64(b"a") == 0xAF63DC4C8601EC8C
    assert sampling_threshold(100) == _MAX_U64
    assert sampling_threshold(0) == 0
    assert abs(sampling_threshold(10) / _MAX_U64 - 0.1) < 1e-15


class _SeededIds(IdGenerator):
    """The same trace ids on every run: one collector and the two tiers decide on identical traces."""

    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)

    def generate_span_id(self) -> int:
        return self._random.getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        return self._random.getrandbits(128) or 1


def _send_traces(endpoint: str, service: str, n: int, seed: int | None = None) -> tuple[dict[int, bool], float]:
    """n traces of SPANS_PER_TRACE spans (random ids, or seeded ones); returns {trace_id: has_error} and the send
    duration."""
    provider = TracerProvider(resource=Resource.create({"service.name": service, "clawdbot.selftest": "sampling"}),
                              id_generator=_SeededIds(seed) if seed is not None else None)
    exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True, timeout=30)
    provider.add_span_processor(
        BatchSpanProcessor(
            exporter, max_queue_size=n * SPANS_PER_TRACE + 100, max_export_batch_size=512, schedule_delay_millis=200
        )
    )
    tracer = provider.get_tracer("clawdbot.selftest.sampling")
    traces: dict[int, bool] = {}
    started = time.monotonic()
    for i in range(n):
        has_error = i % ERROR_EVERY == 0
        root = tracer.start_span("selftest.request", attributes={"selftest.index": i})
        ctx = set_span_in_context(root)
        for j in range(SPANS_PER_TRACE - 1):
            child = tracer.start_span(f"selftest.step.{j}", context=ctx)
            if has_error and j == 1:
                child.set_status(Status(StatusCode.ERROR, "selftest failure"))
            child.end()
        root.end()
        traces[root.get_span_context().trace_id] = has_error
    assert provider.force_flush(60_000), "spans were not all exported"
    provider.shutdown()
    return traces, time.monotonic() - started


class _Jaeger:
    """Keep-alive client for Jaeger's HTTP query API (/api/traces/{id})."""

    def __init__(self, base_url: str) -> None:
        host, port = base_url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=10)

    def span_count(self, trace_id: int) -> int:
        """Spans Jaeger has for the trace; 0 when it does not know it."""
        self.conn.request("GET", f"/api/traces/{trace_id:032x}")
        resp = self.conn.getresponse()
        body = resp.read()
        if resp.status == 404:
            return 0
        assert resp.status == 200, (resp.status, body[:300])
        data = json.loads(body)["data"] or []
        return sum(len(t["spans"]) for t in data)

    def close(self) -> None:
        self.conn.close()


def _collect(jaeger: _Jaeger, traces: dict[int, bool], expected: set[int], timeout: float) -> dict[int, int]:
    """Wait until every expected trace is complete in Jaeger, then read every trace id once more."""
    deadline = time.monotonic() + timeout
    pending = set(expected)
    while pending and time.monotonic() < deadline:
        pending = {t for t in pending if jaeger.span_count(t) < SPANS_PER_TRACE}
        if pending:
            time.sleep(0.5)
    # Everything the collector decided has been flushed by now; a final pass over ALL ids.
    time.sleep(1.0)
    return {t: jaeger.span_count(t) for t in traces}


def _check(traces: dict[int, bool], counts: dict[int, int], percentage: float, label: str) -> None:
    errors = {t for t, e in traces.items() if e}
    ok_traces = {t for t, e in traces.items() if not e}
    kept = {t for t, c in counts.items() if c > 0}
    predicted_ok = {t for t in ok_traces if predicted_kept(t, percentage)}
    partial = {t: c for t, c in counts.items() if 0 < c != SPANS_PER_TRACE}
    print(
        f"\n[{label}] sampling_percentage={percentage}: sent {len(traces)} traces x {SPANS_PER_TRACE} spans; "
        f"error traces kept {len(errors & kept)}/{len(errors)}; non-error kept {len(kept & ok_traces)}/"
        f"{len(ok_traces)} ({100 * len(kept & ok_traces) / len(ok_traces):.2f} %), predicted by the hash "
        f"{len(predicted_ok)} ({100 * len(predicted_ok) / len(ok_traces):.2f} %); incomplete kept traces: "
        f"{len(partial)}"
    )
    assert not partial, f"kept traces with missing spans: {dict(list(partial.items())[:10])}"
    assert errors <= kept, (
        f"{len(errors - kept)} error traces missing, e.g. {[f'{t:032x}' for t in list(errors - kept)[:5]]}"
    )
    unexpected = (kept & ok_traces) - predicted_ok
    missing = predicted_ok - kept
    assert not unexpected and not missing, (
        f"non-error traces kept but not predicted: {len(unexpected)}, predicted but not kept: {len(missing)}; "
        f"e.g. {[f'{t:032x}' for t in list(unexpected | missing)[:5]]}"
    )


@pytest.fixture(params=[0, TWO_TIER_SAMPLERS], ids=["one collector", f"{TWO_TIER_SAMPLERS} samplers"])
def sampling_stack(request: pytest.FixtureRequest) -> tuple[RunningStack, int]:
    """The single collector, then the two tiers: the kept set must be the same (the hash's)."""
    running: RunningStack = request.getfixturevalue("two_tier_stack" if request.param else "stack")
    return running, request.param


def _accepted_spans(stack: RunningStack) -> dict[str, float]:
    """otelcol_receiver_accepted_spans of each tail-sampling collector (its own /metrics)."""
    samplers = {s.name: s.ports["collector_metrics"] for s in status(stack.info.stack_dir)
                if s.name.startswith("otel-sampler-")}
    return {name: metric_sum(f"http://127.0.0.1:{port}", "otelcol_receiver_accepted_spans")
            for name, port in samplers.items()}


def test_tail_sampling_keeps_errors_and_exactly_the_hashed_share(sampling_stack: tuple[RunningStack, int]) -> None:
    stack, samplers = sampling_stack
    service = f"clawdbot-selftest-sampling-{uuid.uuid4().hex[:8]}"
    traces, took = _send_traces(stack.otlp_grpc, service, N_TRACES, seed=SEED)
    print(f"\nsent {N_TRACES} traces in {took:.1f}s")
    expected = {t for t, e in traces.items() if e or predicted_kept(t, stack.sampling_percentage)}
    time.sleep(stack.decision_wait_s + 1.5)  # decision_wait + the collector's batch timeout
    jaeger = _Jaeger(stack.jaeger)
    try:
        counts = _collect(jaeger, traces, expected, timeout=60)
    finally:
        jaeger.close()
    _check(traces, counts, stack.sampling_percentage, "10 %")
    ok_kept = sum(1 for t, c in counts.items() if c and not traces[t])
    share = ok_kept / sum(1 for e in traces.values() if not e)
    assert 0.07 < share < 0.13, f"non-error share {share:.3f} is far from 10 %"
    accepted = _accepted_spans(stack)
    print(f"spans accepted per sampler: {accepted}")
    # Two tiers: every sampler took a share of the traces, and the kept set is the single collector's.
    assert len(accepted) == samplers and all(n > 0 for n in accepted.values()), accepted
    _KEPT[samplers] = frozenset(t for t, c in counts.items() if c)
    assert len(set(_KEPT.values())) == 1, {n: len(kept) for n, kept in _KEPT.items()}


def test_tail_sampling_at_100_percent_keeps_everything(stack: RunningStack, collector_keep_all: ExtraCollector) -> None:
    service = f"clawdbot-selftest-sampling100-{uuid.uuid4().hex[:8]}"
    traces, _ = _send_traces(collector_keep_all.otlp_grpc, service, N_TRACES)
    time.sleep(stack.decision_wait_s + 1.5)
    jaeger = _Jaeger(stack.jaeger)
    try:
        counts = _collect(jaeger, traces, set(traces), timeout=60)
    finally:
        jaeger.close()
    _check(traces, counts, collector_keep_all.sampling_percentage, "100 %")
    assert all(c == SPANS_PER_TRACE for c in counts.values())


def test_a_sampler_restarted_gracefully_loses_no_whole_trace(two_tier_stack: RunningStack) -> None:
    """Two tiers, one sampler stopped (SIGTERM) right after a burst, before its decision_wait ran out, and
    started again, then a second burst. tailsamplingprocessor v0.161.0 decides its pending traces on shutdown
    (drop_pending_traces_on_shutdown is false by default), and tier 1 queues and retries the spans routed to
    the stopped sampler: every trace of both bursts that the policies keep reaches Jaeger whole, and nothing
    else (docs/scaling.md)."""
    stack, root = two_tier_stack, two_tier_stack.info.stack_dir
    service = f"clawdbot-selftest-restart-{uuid.uuid4().hex[:8]}"
    before, _ = _send_traces(stack.otlp_grpc, service, N_TRACES // 2, seed=SEED + 1)
    stop_server("otel-sampler-2", root, progress=print)
    start_server("otel-sampler-2", root, binaries=stack.binaries, progress=print)
    after, _ = _send_traces(stack.otlp_grpc, service, N_TRACES // 2, seed=SEED + 2)
    time.sleep(stack.decision_wait_s + 1.5)
    jaeger = _Jaeger(stack.jaeger)
    try:
        everything = {**before, **after}
        predicted = {t for t, e in everything.items() if e or predicted_kept(t, stack.sampling_percentage)}
        started = time.monotonic()
        counts = _collect(jaeger, everything, predicted, timeout=90)  # tier 1 retries with a 5 s+ backoff
    finally:
        jaeger.close()
    print(f"[restart] all kept traces in Jaeger {time.monotonic() - started:.1f}s after decision_wait")
    _check(before, {t: counts[t] for t in before}, stack.sampling_percentage, "burst before the stop")
    _check(after, {t: counts[t] for t in after}, stack.sampling_percentage, "burst after the restart")
