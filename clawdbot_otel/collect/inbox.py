"""Inbox collection point: `~/clawd/scheduler/inboxes/<agent>/*.json`, one folder per receiving agent.

A message file is `{id, timestamp, from, to, type, subject, content}`. With files as the medium,
the events mean:

* created: a message id met for the first time in an agent's folders (inbox, archive/ or failed/);
* delivered: the message is in the recipient's inbox folder (or already in its archive, when it was
  archived between two scans). Delivery latency = the file's mtime (when the sender wrote it; a
  rename into the folder keeps it) minus the message's `timestamp`. One `message` span per delivery,
  from `timestamp` to the mtime;
* archived: the message is in `<agent>/archive/`;
* failed: the message is in `<agent>/failed/`, the dead-letter folder of messages the recipient or
  a router gave up on. (A message to an agent without an inbox folder leaves no file to see.)

The recipient (`to_agent`) is the folder's agent: where the message actually is, whatever its `to`
field says. `inbox_undelivered_messages{to_agent}` is the number of messages waiting in each inbox
folder (not yet archived). Each event is counted once per (agent, message id); state is forgotten
when the message's files are all gone. Content is never recorded; the subject only when content
capture is on and the catalogue has an attribute for it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from clawdbot_otel import Telemetry

from ._files import MAX_FILE_BYTES, PARTIAL_GRACE_S, InvalidRecord, JsonFolder, optional_str, parse_timestamp
from ._polling import PollingWatcher

__all__ = ["DEFAULT_INBOXES", "InboxMessage", "InboxWatcher"]

DEFAULT_INBOXES = "~/clawd/scheduler/inboxes/"

_SUBJECT_KEY = "clawdbot.message.subject"


class InboxMessage:
    """A parsed message file (content is not kept)."""

    __slots__ = ("from_agent", "message_id", "message_type", "subject", "timestamp", "to_agent", "traceparent",
                 "written_at")

    def __init__(self, message_id: str, from_agent: str, timestamp: float, written_at: float, *,
                 to_agent: str | None = None, message_type: str = "message", subject: str | None = None,
                 traceparent: str | None = None) -> None:
        self.message_id = message_id
        self.from_agent = from_agent
        self.timestamp = timestamp
        self.written_at = written_at
        self.to_agent = to_agent
        self.message_type = message_type
        self.subject = subject
        self.traceparent = traceparent


def _parse_message(path: str, data: dict[str, Any], st: os.stat_result) -> InboxMessage:
    message_id = data.get("id")
    if isinstance(message_id, int) and not isinstance(message_id, bool):
        message_id = str(message_id)
    if message_id is None:  # the file name is the id the writers use anyway
        message_id = os.path.basename(path)[: -len(".json")]
    if not isinstance(message_id, str) or not message_id:
        raise InvalidRecord("field 'id' must be a non-empty string")
    sender = data.get("from")
    if not isinstance(sender, str) or not sender:
        raise InvalidRecord("field 'from' is missing or not a non-empty string")
    timestamp = parse_timestamp(data.get("timestamp"))
    if timestamp is None:
        raise InvalidRecord("field 'timestamp' is missing or not an ISO-8601 time / epoch number")
    return InboxMessage(
        message_id, sender, timestamp, st.st_mtime, to_agent=optional_str(data, "to"),
        message_type=optional_str(data, "type") or "message", subject=optional_str(data, "subject"),
        traceparent=optional_str(data, "traceparent"),
    )


class _MessageState:
    __slots__ = ("archived", "delivered", "failed")

    def __init__(self) -> None:
        self.delivered = False
        self.archived = False
        self.failed = False


class _AgentFolders:
    __slots__ = ("archive", "failed", "inbox", "keys")

    def __init__(self, inbox: JsonFolder[InboxMessage], archive: JsonFolder[InboxMessage],
                 failed: JsonFolder[InboxMessage]) -> None:
        self.inbox = inbox
        self.archive = archive
        self.failed = failed
        self.keys: set[tuple[str, str]] = set()  # message keys seen in these folders at the last scan


class InboxWatcher(PollingWatcher):
    """Watches every agent's inbox folder; see the module docstring for what the events mean."""

    __slots__ = ("_agents", "_count_existing", "_first_scan", "_folder_args", "_messages", "_root_problem",
                 "_waiting", "root")

    source = "inbox"
    component = "inbox"

    def __init__(
        self,
        telemetry: Telemetry,
        root: str | os.PathLike[str] | None = None,
        *,
        interval_s: float = 1.0,
        max_file_bytes: int = MAX_FILE_BYTES,
        partial_grace_s: float = PARTIAL_GRACE_S,
        count_existing: bool = True,
        now: Callable[[], float] = time.time,
    ) -> None:
        """`count_existing=False`: messages already there at the first scan are not counted (a restart)."""
        super().__init__(telemetry, interval_s=interval_s)
        self.root = os.path.expanduser(os.fspath(root if root is not None else DEFAULT_INBOXES))
        self._folder_args: dict[str, Any] = {"max_bytes": max_file_bytes, "partial_grace_s": partial_grace_s,
                                             "now": now}
        self._count_existing = count_existing
        self._first_scan = True
        self._agents: dict[str, _AgentFolders] = {}
        self._messages: dict[tuple[str, str], _MessageState] = {}
        self._waiting: dict[str, int] = {}
        self._root_problem: str | None = None
        self._gauges.observe("inbox_undelivered_messages", self._observe_waiting)

    @property
    def waiting(self) -> dict[str, int]:
        """Messages waiting in each agent's inbox folder, as of the last scan."""
        return dict(self._waiting)

    def _observe_waiting(self) -> Iterable[tuple[float, dict[str, str]]]:
        for agent, count in list(self._waiting.items()):
            yield float(count), {"to_agent": agent}

    def _list_agents(self) -> list[str] | None:
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            if self._root_problem != "missing":
                self._root_problem = "missing"
                self._errors.note(f"Waiting for folder {self.root} to be created", self.root)
            return []
        except OSError as exc:
            reason = "not_a_directory" if isinstance(exc, NotADirectoryError) else "unreadable"
            if self._root_problem != reason:
                self._root_problem = reason
                self._errors.report(reason, self.root, f"cannot list inbox folders: {exc.strerror or exc}")
            return None
        self._root_problem = None
        agents = []
        for entry in entries:
            try:
                if entry.name.startswith(".") or not entry.is_dir():
                    continue  # stray files in the root are not inboxes
            except OSError:
                continue
            agents.append(entry.name)
        return agents

    def _folders(self, agent: str) -> _AgentFolders:
        folders = self._agents.get(agent)
        if folders is None:
            base = os.path.join(self.root, agent)
            args = self._folder_args
            folders = self._agents[agent] = _AgentFolders(
                JsonFolder(base, self._errors, _parse_message, quiet_missing=True, **args),
                JsonFolder(os.path.join(base, "archive"), self._errors, _parse_message, quiet_missing=True, **args),
                JsonFolder(os.path.join(base, "failed"), self._errors, _parse_message, quiet_missing=True, **args),
            )
        return folders

    def _scan(self) -> None:
        agents = self._list_agents()
        if agents is None:
            return  # cannot tell what is there: keep what we know
        backfill = self._first_scan and not self._count_existing
        self._first_scan = False
        for gone in [a for a in self._agents if a not in agents]:
            del self._agents[gone]
            self._waiting.pop(gone, None)
        for agent in sorted(agents):
            self._scan_agent(agent, self._folders(agent), backfill)
        live = set().union(*(f.keys for f in self._agents.values())) if self._agents else set()
        for key in [k for k in self._messages if k not in live]:
            del self._messages[key]

    def _scan_agent(self, agent: str, folders: _AgentFolders, backfill: bool) -> None:
        inbox, archive, failed = folders.inbox.scan(), folders.archive.scan(), folders.failed.scan()
        keys: set[tuple[str, str]] = set()
        if inbox is None or archive is None or failed is None:
            keys |= folders.keys  # a folder could not be listed: its messages are not gone
        if inbox is not None:
            self._waiting[agent] = len(inbox)
        for where, records in (("inbox", inbox), ("archive", archive), ("failed", failed)):
            for message in (records or {}).values():
                key = (agent, message.message_id)
                keys.add(key)
                self._on_message(agent, key, message, where, backfill)
        folders.keys = keys

    def _on_message(self, agent: str, key: tuple[str, str], message: InboxMessage, where: str,
                    backfill: bool) -> None:
        state = self._messages.get(key)
        if state is None:
            state = self._messages[key] = _MessageState()
            if not backfill:
                self._count("created", message, agent)
        if where == "failed":
            if not state.failed:
                state.failed = True
                if not backfill:
                    self._count("failed", message, agent)
            return
        if not state.delivered:
            state.delivered = True
            if not backfill:
                self._deliver(message, agent)
        if where == "archive" and not state.archived:
            state.archived = True
            if not backfill:
                self._count("archived", message, agent)

    def _count(self, event: str, message: InboxMessage, agent: str) -> None:
        self.telemetry.increment("inbox_messages_total",
                                 {"event": event, "from_agent": message.from_agent, "to_agent": agent})
        level = "WARN" if event == "failed" else "DEBUG" if event == "created" else "INFO"
        self.telemetry.log(level, self.component, f"Message {event}", metadata={
            "message_id": message.message_id, "from": message.from_agent, "to": agent, "type": message.message_type,
        })

    def _deliver(self, message: InboxMessage, agent: str) -> None:
        telemetry = self.telemetry
        self._count("delivered", message, agent)
        latency: float | None = message.written_at - message.timestamp
        if latency is not None and latency >= 0:
            telemetry.histogram("inbox_delivery_latency_seconds", latency, {"to_agent": agent})
        else:  # the sender's clock is ahead of the file system's: no latency rather than a false zero
            latency = None
        end_ns = int(message.written_at * 1e9)
        handle = telemetry.message_span(
            message.from_agent, agent, message.message_type, operation="deliver", message_id=message.message_id,
            parent=message.traceparent, start_time=min(end_ns, int(message.timestamp * 1e9)),
        ).start()
        handle.set("clawdbot.message.delivery_latency_s", latency)
        if telemetry.capture_content and message.subject:
            handle.set(_SUBJECT_KEY, telemetry.redactor.text(message.subject))
        handle.end(end_ns)
