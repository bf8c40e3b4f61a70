"""The OpenClaw state collection point against the REAL OpenClaw gateway (npm openclaw, fake model).

Automations are made and run with the real CLI while no client is connected to our proxy; the watcher
reads what OpenClaw recorded, and every number is checked against OpenClaw's own run history
(`openclaw automations runs <id> --json`).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.trace import StatusCode

from clawdbot_otel.collect import OpenClawStateWatcher
from clawdbot_otel.testing import Capture, capture_telemetry
from tests.collect.helpers import values
from tests.collect.openclaw_automations import (
    Automation,
    describe,
    history,
    run_automation,
)
from tests.gateway.test_real_openclaw_proxy import _ProxyThread
from tests.openclaw.fake_model import FakeModelServer, TextReply
from tests.openclaw.harness import OpenClawGateway, parse_agent_json

pytestmark = [pytest.mark.openclaw, pytest.mark.timeout(1500)]


def _watcher(cap: Capture, gw: OpenClawGateway, checkpoint: Path, **kwargs: Any) -> OpenClawStateWatcher:
    return OpenClawStateWatcher(cap.telemetry, gw.home / ".openclaw", checkpoint=checkpoint, usage_settle_s=0,
                                **kwargs)


def _job_spans(cap: Capture) -> dict[str, list[Any]]:
    spans: dict[str, list[Any]] = {}
    for span in cap.spans_by_category("job"):
        spans.setdefault(str((span.attributes or {})["clawdbot.job.name"]), []).append(span)
    return spans


def test_runs_are_counted_by_job_and_status_with_openclaws_own_durations(
    cron_gateway: OpenClawGateway, automations: dict[str, Automation], tmp_path: Path,
) -> None:
    ok, fail, model, disabled = (automations[k] for k in ("ok", "fail", "model", "disabled"))
    assert [len(ok.runs), len(fail.runs), len(model.runs), len(disabled.runs)] == [1, 1, 1, 0]
    assert [ok.runs[0]["status"], fail.runs[0]["status"], model.runs[0]["status"]] == ["ok", "error", "error"]
    with capture_telemetry() as cap:
        watcher = _watcher(cap, cron_gateway, tmp_path / "checkpoint.json")
        watcher.scan_once()
        assert values(cap, "scheduler.jobs") == {
            (("job_name", "nightly-ok"), ("status", "success")): 1,
            (("job_name", "nightly-exit3"), ("status", "failure")): 1,
            (("job_name", "nightly-model-down"), ("status", "failure")): 1,
        }
        assert values(cap, "scheduler.job.errors") == {
            (("error_type", "runtime"), ("job_name", "nightly-exit3")): 1,
            (("error_type", "model"), ("job_name", "nightly-model-down")): 1,
        }
        latency = {tuple(p.attributes.items()): (p.count, p.sum) for p in cap.metric_points("scheduler.job.latency")}
        spans = _job_spans(cap)
        for job in (ok, fail, model):
            (run,) = job.runs
            # the histogram and the span carry OpenClaw's own run time, to the millisecond
            assert latency[(("job_name", job.name),)] == (1, run["durationMs"] / 1000)
            (span,) = spans[job.name]
            assert span.start_time == run["runAtMs"] * 1_000_000
            assert (span.end_time - span.start_time) // 1_000_000 == run["durationMs"]
            assert span.attributes["clawdbot.job.id"] == job.job_id
            assert span.attributes["clawdbot.job.trigger"] == "manual"
            assert span.status.status_code == (StatusCode.OK if run["status"] == "ok" else StatusCode.ERROR)
            print(f"{job.name}: OpenClaw {run['status']} runAtMs={run['runAtMs']} durationMs={run['durationMs']} | "
                  f"histogram (count, sum)={latency[(('job_name', job.name),)]} | span start_ms="
                  f"{span.start_time // 1_000_000} duration_ms={(span.end_time - span.start_time) // 1_000_000} "
                  f"{span.status.status_code.name}")
        assert disabled.name not in spans
        # the agent run the model job started hangs under its job span, failed
        (session,) = cap.spans_by_category("session")
        assert session.parent is not None and session.parent.span_id == spans[model.name][0].context.span_id
        assert str((session.attributes or {})["clawdbot.session.key"]).startswith(f"agent:main:cron:{model.job_id}")
        assert session.status.status_code == StatusCode.ERROR
        # next runs: the enabled jobs count down, the disabled one has none
        next_runs = values(cap, "scheduler.next_run")
        assert {(("job_name", j.name),) in next_runs for j in (ok, fail, model)} == {True}
        assert (("job_name", disabled.name),) not in next_runs
        # OpenClaw's task ledger: one automation_run task per run (runtime cron)
        assert values(cap, "task.completion") == {
            (("phase", "cron"), ("status", "success")): 1, (("phase", "cron"), ("status", "failure")): 2,
        }
        errors = [line for line in cap.log_lines() if line["message"] == "Job failure"]
        assert {line["metadata"]["error"] for line in errors} >= {"command exited with code 3"}
        watcher.close()


def test_a_restart_in_the_middle_neither_loses_nor_repeats_a_run(
    cron_gateway: OpenClawGateway, automations: dict[str, Automation], tmp_path: Path,
) -> None:
    checkpoint = tmp_path / "checkpoint.json"
    ok = automations["ok"]
    with capture_telemetry() as first:
        watcher = _watcher(first, cron_gateway, checkpoint)
        watcher.scan_once()
        watcher.close()
    before = len(history(cron_gateway, ok))
    run_automation(cron_gateway, ok, succeeds=True)  # while no watcher runs
    runs = history(cron_gateway, ok)
    assert len(runs) == before + 1
    with capture_telemetry() as second:
        watcher = _watcher(second, cron_gateway, checkpoint)
        watcher.scan_once()
        watcher.scan_once()
        watcher.close()
    counted = [values(cap, "scheduler.jobs").get((("job_name", ok.name), ("status", "success")), 0)
               for cap in (first, second)]
    assert counted == [before, 1]
    (span,) = _job_spans(second)[ok.name]
    newest = max(runs, key=lambda e: e["runAtMs"])
    assert (span.start_time // 1_000_000, (span.end_time - span.start_time) // 1_000_000) == (
        newest["runAtMs"], newest["durationMs"])
    assert set(_job_spans(second)) == {ok.name}  # the other jobs' runs were reported before the restart


def _copy_state(gw: OpenClawGateway, target: Path, *, journal_mode: str = "WAL") -> Path:
    """A consistent copy of the gateway's state folder databases (SQLite's backup API, read-only source)."""
    src_dir = gw.home / ".openclaw"
    for db in [src_dir / "state" / "openclaw.sqlite", *src_dir.glob("agents/*/agent/openclaw-agent.sqlite")]:
        dest = target / db.relative_to(src_dir)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True) as src, sqlite3.connect(dest) as out:
            src.backup(out)
            out.execute(f"PRAGMA journal_mode = {journal_mode}")
        src.close()
        out.close()
    return target


def test_a_database_from_the_future_is_refused_and_reported(
    cron_gateway: OpenClawGateway, automations: dict[str, Automation], tmp_path: Path,
) -> None:
    folder = _copy_state(cron_gateway, tmp_path / "openclaw")
    state_db = folder / "state" / "openclaw.sqlite"
    with sqlite3.connect(state_db) as db:
        db.execute("PRAGMA user_version = 99")
    db.close()
    with capture_telemetry() as cap:
        watcher = OpenClawStateWatcher(cap.telemetry, folder, checkpoint=tmp_path / "ck.json", usage_settle_s=0)
        watcher.scan_once()
        watcher.scan_once()  # said once, not once per poll
        watcher.close()
        assert values(cap, "clawdbot_otel.source_errors") == {
            (("reason", "schema_unknown"), ("source", "openclaw_state")): 1}
        assert "scheduler.jobs" not in cap.collect_metrics()
        (line,) = [entry for entry in cap.log_lines() if entry["level"] == "ERROR"]
        assert line["message"] == (
            f"Skipped {state_db}: schema_unknown (schema version 99 is newer than the versions this clawdbot-otel "
            "knows (13..18); upgrade clawdbot-otel; its tables are not read)")


def test_a_locked_database_is_counted_and_read_at_the_next_poll(
    cron_gateway: OpenClawGateway, automations: dict[str, Automation], tmp_path: Path,
) -> None:
    folder = _copy_state(cron_gateway, tmp_path / "openclaw", journal_mode="DELETE")
    locker = sqlite3.connect(folder / "state" / "openclaw.sqlite", isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")  # a writer mid-transaction in rollback-journal mode: readers get SQLITE_BUSY
    with capture_telemetry() as cap:
        watcher = OpenClawStateWatcher(cap.telemetry, folder, checkpoint=tmp_path / "ck.json", usage_settle_s=0)
        watcher.scan_once()
        assert values(cap, "clawdbot_otel.source_errors") == {(("reason", "busy"), ("source", "openclaw_state")): 1}
        assert "scheduler.jobs" not in cap.collect_metrics()
        locker.execute("ROLLBACK")
        locker.close()
        watcher.scan_once()
        watcher.close()
        expected = {job.name: len(history(cron_gateway, job)) for job in automations.values()}
        counted = {name: 0 for name in expected}
        for labels, count in values(cap, "scheduler.jobs").items():
            counted[dict(labels)["job_name"]] = counted.get(dict(labels)["job_name"], 0) + count
        assert counted == expected


def test_model_usage_is_counted_once_whether_or_not_it_passed_through_the_proxy(
    cron_gateway: OpenClawGateway, cron_model: FakeModelServer, tmp_path: Path,
) -> None:
    """The rule: a run the proxy reported (it saw its final response) is the proxy's; every other run is the
    watcher's. One turn through the proxy, one directly: the tokens of each are counted exactly once."""
    checkpoint = tmp_path / "checkpoint.json"
    with capture_telemetry() as baseline:  # whatever OpenClaw recorded before this test (automations)
        watcher = _watcher(baseline, cron_gateway, checkpoint)
        watcher.scan_once()
        watcher.close()
    cron_model.enqueue(TextReply("via proxy", prompt_tokens=1000, completion_tokens=10),
                       TextReply("direct", prompt_tokens=2000, completion_tokens=20))
    with capture_telemetry() as cap, _ProxyThread(cap, cron_gateway.url, cron_gateway.token) as server:
        assert server.observer is not None
        via = cron_gateway.run_agent_turn("hello", server.url, session_key=f"agent:main:px-{uuid.uuid4().hex[:8]}")
        direct = cron_gateway.run_agent_turn("hello", session_key=f"agent:main:dx-{uuid.uuid4().hex[:8]}")
        assert via.returncode == direct.returncode == 0, describe(via) + describe(direct)
        via_run = parse_agent_json(via)["runId"]
        assert server.observer.counted_run(via_run)
        watcher = _watcher(cap, cron_gateway, checkpoint, proxy_counted=server.observer.counted_run)
        watcher.scan_once()
        watcher.close()
        tokens = values(cap, "session.tokens_used")
    assert tokens == {
        (("model", "sonnet"), ("token_type", "input")): 1000 + 2000,
        (("model", "sonnet"), ("token_type", "output")): 10 + 20,
    }


def _cli(*args: str, xdg: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CLAWDBOT_OTEL_", "OPENCLAW_"))}
    env["XDG_STATE_HOME"] = str(xdg)  # the checkpoint and the local telemetry files land here
    return subprocess.run([sys.executable, "-m", "clawdbot_otel.cli", *args], env=env, capture_output=True,
                          text=True, timeout=120, check=False)


def test_watch_openclaw_once_says_what_it_reported_and_a_restart_reports_nothing_twice(
    cron_gateway: OpenClawGateway, automations: dict[str, Automation], tmp_path: Path,
) -> None:
    folder = _copy_state(cron_gateway, tmp_path / "openclaw")
    with sqlite3.connect(f"{(folder / 'state' / 'openclaw.sqlite').as_uri()}?mode=ro", uri=True) as db:
        runs, tasks = (db.execute(f"SELECT count(*) FROM {table} WHERE {done}").fetchone()[0] for table, done in (
            ("cron_run_receipts", "status != 'running'"), ("task_runs", "ended_at IS NOT NULL")))
    db.close()
    with sqlite3.connect(f"{(folder / 'agents' / 'main' / 'agent' / 'openclaw-agent.sqlite').as_uri()}?mode=ro",
                         uri=True) as db:
        usage, newest_ms = db.execute("SELECT count(*), max(created_at) FROM trajectory_runtime_events "
                                      "WHERE json_extract(event_json, '$.type') = 'model.completed'").fetchone()
    db.close()
    # model usage is reported once it is 30 s old (the proxy's head start): let the newest row settle
    time.sleep(max(0.0, newest_ms / 1000 + 31 - time.time()))
    first = _cli("watch-openclaw", "--once", "--openclaw-state", str(folder), xdg=tmp_path / "xdg")
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[-1] == (
        f"clawdbot-otel watch-openclaw: read {folder}: {runs} automation run(s), {tasks} task(s), "
        f"model usage of {usage} run(s) reported")
    again = _cli("watch-openclaw", "--once", "--openclaw-state", str(folder), xdg=tmp_path / "xdg")
    assert again.stdout.splitlines()[-1] == (
        f"clawdbot-otel watch-openclaw: read {folder}: 0 automation run(s), 0 task(s), model usage of 0 run(s) reported")
    missing = _cli("watch-openclaw", "--openclaw-state", str(tmp_path / "nowhere"), xdg=tmp_path / "xdg")
    assert (missing.returncode, missing.stderr) == (1, (
        f"clawdbot-otel watch-openclaw: {tmp_path / 'nowhere'} does not exist; pass OpenClaw's state folder with "
        "--openclaw-state DIR (or set OPENCLAW_STATE_DIR)\n"))


def test_a_run_in_progress_is_active_and_a_late_commit_is_still_counted_once(
    cron_gateway: OpenClawGateway, automations: dict[str, Automation], tmp_path: Path,
) -> None:
    """On a copy of the real database, rows written the way OpenClaw writes them: a receipt `running`, then
    finished; and a receipt that commits after a newer one was already reported (finish time in the past)."""
    folder = _copy_state(cron_gateway, tmp_path / "openclaw")
    ok = automations["ok"]
    ok_runs = len(history(cron_gateway, ok))
    db = sqlite3.connect(folder / "state" / "openclaw.sqlite", isolation_level=None)
    insert = ("INSERT INTO cron_run_receipts (receipt_id, store_key, job_id, config_revision, agent_id, "
              "request_run_id, status, owner_pid, started_at_ms, finished_at_ms) VALUES (?, 's', ?, 'r', 'main', "
              "'manual:x', ?, 1, ?, ?)")
    with capture_telemetry() as cap:
        watcher = OpenClawStateWatcher(cap.telemetry, folder, checkpoint=tmp_path / "ck.json", usage_settle_s=0)
        watcher.scan_once()
        newest_ms = db.execute("SELECT max(finished_at_ms) FROM cron_run_receipts").fetchone()[0]
        db.execute(insert, ("in-progress", ok.job_id, "running", newest_ms + 1000, None))
        watcher.scan_once()
        assert values(cap, "scheduler.jobs.active") == {(): 1}
        db.execute("UPDATE cron_run_receipts SET status = 'ok', finished_at_ms = ? WHERE receipt_id = 'in-progress'",
                   (newest_ms + 1500,))
        db.execute(insert, ("late", ok.job_id, "error", newest_ms - 60_500, newest_ms - 60_000))
        db.execute(insert, ("still-running", ok.job_id, "running", newest_ms + 2000, None))
        watcher.scan_once()
        watcher.scan_once()
        assert values(cap, "scheduler.jobs.active") == {(): 1}
        watcher.close()  # a stopped reader does not leave runs counted as active
        assert values(cap, "scheduler.jobs.active") == {(): 0}
        assert values(cap, "scheduler.jobs")[(("job_name", ok.name), ("status", "success"))] == ok_runs + 1
        assert values(cap, "scheduler.jobs")[(("job_name", ok.name), ("status", "failure"))] == 1
    db.close()


def test_a_damaged_checkpoint_is_reported_and_the_history_read_again(
    cron_gateway: OpenClawGateway, automations: dict[str, Automation], tmp_path: Path,
) -> None:
    folder = _copy_state(cron_gateway, tmp_path / "openclaw")
    checkpoint = tmp_path / "ck.json"
    checkpoint.write_bytes(b'{"receipts": {"hwm_ms": "not a number"')
    with capture_telemetry() as cap:
        watcher = OpenClawStateWatcher(cap.telemetry, folder, checkpoint=checkpoint, usage_settle_s=0)
        watcher.scan_once()
        watcher.close()
        assert values(cap, "clawdbot_otel.source_errors") == {
            (("reason", "checkpoint_damaged"), ("source", "openclaw_state")): 1}
        assert watcher.counts["runs"] == sum(len(history(cron_gateway, job)) for job in automations.values())
    assert b"not a number" not in checkpoint.read_bytes()  # replaced by a good one
