"""Inbox: created/delivered/archived/failed once per message, delivery latency, waiting messages, spans."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from opentelemetry.trace import SpanKind

from clawdbot_otel.collect import InboxWatcher
from clawdbot_otel.testing import Capture, capture_telemetry

from .helpers import T0, FakeClock, histogram, logs, value, values, write_json

SECRET = "the launch codes are 0000"


def message(mid: str, sender: str = "worker", to: str = "main", **extra: Any) -> dict[str, Any]:
    return {"id": mid, "timestamp": "2027-01-15T08:00:00.000Z", "from": sender, "to": to, "type": "status",
            "subject": "Progress", "content": SECRET, **extra}


class Inboxes:
    def __init__(self, cap: Capture, root: Path, clock: FakeClock, **kwargs: Any) -> None:
        self.root = root
        self.watcher = InboxWatcher(cap.telemetry, root, now=clock, **kwargs)

    def send(self, mid: str, to: str = "main", folder: str = "", delay_s: float = 0.75, **kw: Any) -> Path:
        path = self.root / to / folder / f"{mid}.json"
        return write_json(path, message(mid, to=to, **kw), mtime=T0 + delay_s)

    def archive(self, mid: str, agent: str = "main", into: str = "archive") -> None:
        target = self.root / agent / into
        target.mkdir(exist_ok=True)
        (self.root / agent / f"{mid}.json").rename(target / f"{mid}.json")  # a rename keeps the mtime

    def scan(self, times: int = 1) -> None:
        for _ in range(times):
            self.watcher.scan_once()


@pytest.fixture
def inboxes(cap: Capture, tmp_path: Path, clock: FakeClock) -> Inboxes:
    return Inboxes(cap, tmp_path / "inboxes", clock)


def events(cap: Capture, event: str, sender: str = "worker", to: str = "main") -> Any:
    return value(cap, "inbox.messages", event=event, from_agent=sender, to_agent=to)


def test_delivered_message_counted_once_with_latency_and_span(cap: Capture, inboxes: Inboxes) -> None:
    inboxes.send("m1")
    inboxes.scan(3)
    assert events(cap, "created") == 1
    assert events(cap, "delivered") == 1
    assert histogram(cap, "inbox.delivery.latency", to_agent="main") == (1, 0.75)
    assert value(cap, "inbox.undelivered_messages", to_agent="main") == 1
    [span] = cap.spans_by_category("message")
    assert span.name == "deliver main"
    assert span.kind is SpanKind.CONSUMER
    assert (span.start_time, span.end_time) == (int(T0 * 1e9), int((T0 + 0.75) * 1e9))
    attrs = dict(span.attributes or {})
    assert attrs["clawdbot.message.from"] == "worker"
    assert attrs["clawdbot.message.to"] == "main"
    assert attrs["clawdbot.message.type"] == "status"
    assert attrs["messaging.message.id"] == "m1"
    assert attrs["clawdbot.message.delivery_latency_s"] == 0.75


@pytest.mark.parametrize("capture_content", [False, True])
def test_content_is_never_recorded_and_the_subject_only_with_content_capture(
    tmp_path: Path, clock: FakeClock, capture_content: bool
) -> None:
    with capture_telemetry(capture_content=capture_content) as cap:
        inboxes = Inboxes(cap, tmp_path, clock)
        inboxes.send("m1")
        inboxes.scan()
        recorded = repr([dict(s.attributes or {}) for s in cap.finished_spans()]) + cap.log_stream.getvalue().decode()
        assert SECRET not in recorded
        assert ("Progress" in recorded) is capture_content


def test_archive_counts_archived_and_empties_the_inbox(cap: Capture, inboxes: Inboxes) -> None:
    inboxes.send("m1")
    inboxes.send("m2")
    inboxes.scan()
    inboxes.archive("m1")
    inboxes.scan(2)
    assert events(cap, "archived") == 1
    assert events(cap, "delivered") == 2
    assert value(cap, "inbox.undelivered_messages", to_agent="main") == 1
    assert len(cap.spans_by_category("message")) == 2


def test_message_archived_between_scans_is_still_delivered(cap: Capture, inboxes: Inboxes) -> None:
    inboxes.send("m1", folder="archive", delay_s=2.0)
    inboxes.scan()
    assert events(cap, "created") == 1
    assert events(cap, "delivered") == 1
    assert events(cap, "archived") == 1
    assert histogram(cap, "inbox.delivery.latency", to_agent="main") == (1, 2.0)


def test_dead_letter_folder_counts_failed(cap: Capture, inboxes: Inboxes) -> None:
    inboxes.send("m1")
    inboxes.scan()
    inboxes.archive("m1", into="failed")
    inboxes.send("m2", folder="failed")
    inboxes.scan(2)
    assert events(cap, "failed") == 2
    assert events(cap, "delivered") == 1  # m2 never reached the inbox
    assert [r["level"] for r in logs(cap, "Message failed")] == ["WARN", "WARN"]


def test_agents_pairs_and_waiting_per_agent(cap: Capture, inboxes: Inboxes) -> None:
    inboxes.send("m1", to="main", sender="worker")
    inboxes.send("m2", to="worker", sender="main")
    inboxes.send("m3", to="worker", sender="main")
    (inboxes.root / "reviewer").mkdir()
    inboxes.scan()
    assert values(cap, "inbox.undelivered_messages") == {
        (("to_agent", "main"),): 1, (("to_agent", "reviewer"),): 0, (("to_agent", "worker"),): 2}
    assert events(cap, "delivered", sender="main", to="worker") == 2


def test_recipient_is_the_folder_not_the_to_field(cap: Capture, inboxes: Inboxes) -> None:
    write_json(inboxes.root / "reviewer" / "m1.json", message("m1", to="main"), mtime=T0 + 1)
    inboxes.scan()
    assert events(cap, "delivered", to="reviewer") == 1


def test_removed_agent_folder_drops_its_gauge(cap: Capture, inboxes: Inboxes) -> None:
    path = inboxes.send("m1", to="temp")
    inboxes.scan()
    path.unlink()
    path.parent.rmdir()
    inboxes.scan()
    assert value(cap, "inbox.undelivered_messages", to_agent="temp") is None


def test_sender_clock_ahead_gives_no_latency(cap: Capture, inboxes: Inboxes) -> None:
    inboxes.send("m1", delay_s=-5.0)
    inboxes.scan()
    assert events(cap, "delivered") == 1
    assert histogram(cap, "inbox.delivery.latency", to_agent="main") == (0, 0.0)


def test_id_defaults_to_file_name(cap: Capture, inboxes: Inboxes) -> None:
    data = message("x")
    del data["id"]
    write_json(inboxes.root / "main" / "from-name.json", data)
    inboxes.scan()
    assert dict(cap.spans_by_category("message")[0].attributes or {})["messaging.message.id"] == "from-name"


def test_count_existing_false(cap: Capture, tmp_path: Path, clock: FakeClock) -> None:
    inboxes = Inboxes(cap, tmp_path, clock, count_existing=False)
    inboxes.send("old")
    inboxes.scan()
    assert events(cap, "delivered") is None
    assert value(cap, "inbox.undelivered_messages", to_agent="main") == 1
    inboxes.archive("old")
    inboxes.send("new")
    inboxes.scan()
    assert events(cap, "delivered") == 1
    assert events(cap, "archived") == 1


def test_stray_files_in_root_are_ignored(cap: Capture, inboxes: Inboxes) -> None:
    write_json(inboxes.root / "README.json", {"not": "an inbox"})
    inboxes.send("m1")
    inboxes.scan()
    assert events(cap, "delivered") == 1
