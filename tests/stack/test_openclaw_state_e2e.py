"""The real OpenClaw gateway's automations, run with nobody connected to our proxy, arrive in Prometheus and
Jaeger through the native stack: `clawdbot-otel gateway --upstream` reads the upstream's state folder.

The stack's collector samples traces (10 %); the failed run's trace is kept by the tail-sampling rule that
keeps every trace with an ERROR span.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.collect.openclaw_automations import Automation
from tests.openclaw.harness import OpenClawGateway

from .conftest import RunningStack, gateway_process, jaeger_spans, parent_of, prom_query, wait_for

pytestmark = [pytest.mark.stack, pytest.mark.openclaw, pytest.mark.timeout(1500)]


def test_automations_run_with_no_client_connected_show_in_prometheus_and_jaeger(
    stack: RunningStack, cron_gateway: OpenClawGateway, automations: dict[str, Automation], tmp_path: Path,
) -> None:
    service = f"clawdbot-openclaw-state-{uuid.uuid4().hex[:8]}"
    args = ["--upstream", cron_gateway.url, "--openclaw-state", str(cron_gateway.home / ".openclaw"),
            "--openclaw-state-interval", "1", "--workspace", str(tmp_path / "clawd")]
    extra = {"OPENCLAW_GATEWAY_TOKEN": cron_gateway.token, "XDG_STATE_HOME": str(tmp_path / "xdg")}
    job = f'job="{service}"'
    ok, fail, model, disabled = (automations[k] for k in ("ok", "fail", "model", "disabled"))
    with gateway_process(stack.otlp_grpc, service, args, tmp_path, extra) as gateway:
        assert (f"clawdbot-otel gateway: reading OpenClaw state in {cron_gateway.home / '.openclaw'} every 1 s"
                in gateway.log_path.read_text())

        def runs() -> dict[tuple[str, str], float]:
            rows = prom_query(stack, f"scheduler_jobs_total{{{job}}}")
            return {(r["metric"]["job_name"], r["metric"]["status"]): float(r["value"][1]) for r in rows}

        expected = {(ok.name, "success"): float(len(ok.runs)), (fail.name, "failure"): float(len(fail.runs)),
                    (model.name, "failure"): float(len(model.runs))}
        wait_for(lambda: {k: v for k, v in runs().items() if k[0].startswith("nightly-")} == expected, 90, 2,
                 f"runs by job and status {expected} in Prometheus")
        seen = runs()
        for automation in (ok, fail, model):
            rows = prom_query(stack, f'scheduler_job_latency_seconds_sum{{{job},job_name="{automation.name}"}}')
            latency_s = float(rows[0]["value"][1])
            assert latency_s == pytest.approx(sum(r["durationMs"] for r in automation.runs) / 1000, abs=1e-9)
            # the closing note's table: OpenClaw's own history beside what Prometheus shows
            print(f"{automation.name}: OpenClaw {[(r['status'], r['durationMs']) for r in automation.runs]} | "
                  f"Prometheus {({k[1]: v for k, v in seen.items() if k[0] == automation.name})} "
                  f"latency sum {latency_s} s")
        next_runs = {r["metric"]["job_name"] for r in prom_query(stack, f"scheduler_next_run_seconds{{{job}}}")}
        assert {ok.name, fail.name, model.name} <= next_runs and disabled.name not in next_runs

        def failed_run_span() -> dict[str, Any] | None:
            for span in jaeger_spans(stack, service):
                if span["operationName"] == f"cron.job {fail.name}":
                    return span
            return None

        span = wait_for(failed_run_span, 90, 2, "the failed run's job span in Jaeger")

        def model_down_agent_run() -> dict[str, Any] | None:
            spans = jaeger_spans(stack, service)
            parent = parent_of(spans)
            for candidate in spans:
                up = parent(candidate)
                if candidate["tags_map"].get("clawdbot.span.category") == "session" and up is not None \
                        and up["operationName"] == f"cron.job {model.name}":
                    return candidate
            return None

        # the agent run the automation started hangs under its job span, in the same (kept) trace
        agent_run = wait_for(model_down_agent_run, 90, 2, "the model job's agent run under its job span in Jaeger")
        assert str(agent_run["tags_map"]["clawdbot.session.key"]).startswith(f"agent:main:cron:{model.job_id}")
    (run,) = fail.runs
    print(f"{fail.name}: Jaeger span start {span['startTime']} us, duration {span['duration']} us; OpenClaw runAtMs "
          f"{run['runAtMs']}, durationMs {run['durationMs']}")
    assert (span["startTime"], span["duration"]) == (run["runAtMs"] * 1000, run["durationMs"] * 1000)
    assert span["tags_map"]["error.type"] == "runtime" and span["tags_map"]["otel.status_code"] == "ERROR"
