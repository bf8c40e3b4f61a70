"""`clawdbot-otel logs search`: the design's JSON log records back from the log store (VictoriaLogs).

The store keeps what the collector sent over OTLP: the record's body as `_msg`, its attributes as fields
(`component`, `correlation_id`, `metadata.<key>`, ...), `severity_text`/`severity_number`, `trace_id`,
`span_id`, and the resource attributes (`service.name`, ...) as stream fields. `search_logs` asks with
LogsQL (`/select/logsql/query`) and turns each hit back into the design's record shape, so that "show me
the logs of this trace" is one command whose output looks like the log files.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from clawdbot_otel.conventions import LOG_LEVELS

__all__ = ["LogSearchError", "LogsQuery", "register_log_search", "search_logs"]

_TRACE_ID = re.compile(r"[0-9a-f]{32}")
_SINCE = re.compile(r"[1-9][0-9]*(s|m|h|d|w)")
# The lowest OTel severity number of each design level (the logs data model groups numbers in fours);
# TRACE (1-4) counts as the lowest level, DEBUG.
_LEVEL_FLOOR = {lv.name: 1 if i == 0 else lv.otel_severity_number for i, lv in enumerate(LOG_LEVELS)}
_LEVEL_BY_NUMBER = sorted(((floor, name) for name, floor in _LEVEL_FLOOR.items()), reverse=True)
_TOP_LEVEL = ("correlation_id", "request_id", "session_id", "duration_ms")


class LogSearchError(Exception):
    """The store could not answer (unreachable, or it refused the query); the message says what to do."""


@dataclass(frozen=True, slots=True)
class LogsQuery:
    """What to look for. `level` is a floor: WARN finds WARN, ERROR and FATAL."""

    trace_id: str | None = None
    level: str | None = None
    component: str | None = None
    since: str = "1h"
    limit: int = 100

    def __post_init__(self) -> None:
        if self.trace_id is not None and not _TRACE_ID.fullmatch(self.trace_id):
            raise ValueError(f"--trace-id must be 32 lowercase hex digits, got {self.trace_id!r}")
        if self.level is not None and self.level not in _LEVEL_FLOOR:
            raise ValueError(f"--level must be one of {', '.join(_LEVEL_FLOOR)}, got {self.level!r}")
        if not _SINCE.fullmatch(self.since):
            raise ValueError(f"--since takes a number and a unit (s, m, h, d, w) such as 30m or 7d, got {self.since!r}")
        if self.limit < 1:
            raise ValueError(f"--limit must be at least 1, got {self.limit}")

    def logsql(self) -> str:
        """The LogsQL query: every filter ANDed, newest last."""
        filters = [f"_time:{self.since}"]
        if self.trace_id:
            filters.append(f'trace_id:="{self.trace_id}"')
        if self.level:
            filters.append(f"severity_number:range[{_LEVEL_FLOOR[self.level]}, 24]")
        if self.component:
            filters.append(f"component:={json.dumps(self.component)}")
        return " ".join(filters) + " | sort by (_time)"


def _level(row: dict[str, Any]) -> str:
    text = str(row.get("severity_text") or "").upper()
    if text in _LEVEL_FLOOR:
        return text
    try:
        number = int(row.get("severity_number") or 0)
    except ValueError:
        number = 0
    return next((name for floor, name in _LEVEL_BY_NUMBER if number >= floor), "INFO")


def design_record(row: dict[str, Any]) -> dict[str, Any]:
    """A stored row in the design's JSON log record shape (the fields of `LOG_FIELDS`)."""
    record: dict[str, Any] = {
        "timestamp": _iso_millis(str(row.get("_time", ""))),
        "level": _level(row),
        "component": row.get("component", ""),
        "message": row.get("_msg", ""),
    }
    for key in _TOP_LEVEL:
        if key in row:
            record[key] = _number(row[key]) if key == "duration_ms" else row[key]
    for key in ("trace_id", "span_id"):
        if row.get(key):
            record[key] = row[key]
    metadata = {k.removeprefix("metadata."): v for k, v in row.items() if k.startswith("metadata.")}
    if metadata:
        record["metadata"] = metadata
    if row.get("service.name"):
        record["service"] = row["service.name"]
    return record


def _number(value: Any) -> Any:
    try:
        as_float = float(value)
    except (TypeError, ValueError):
        return value
    return int(as_float) if as_float.is_integer() else as_float


def _iso_millis(value: str) -> str:
    # VictoriaLogs answers RFC 3339 with up to nanoseconds: keep the design's milliseconds and Z.
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?Z", value)
    if not match:
        return value
    return f"{match.group(1)}.{(match.group(2) or '').ljust(3, '0')[:3]}Z"


def search_logs(url: str, query: LogsQuery, *, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """The matching records, oldest first, at most `query.limit` (the newest ones when there are more)."""
    params = urllib.parse.urlencode({"query": query.logsql(), "limit": str(query.limit)})
    endpoint = f"{url.rstrip('/')}/select/logsql/query"
    request = urllib.request.Request(endpoint, data=params.encode(), method="POST",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:
            body = resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        detail = " ".join(exc.read().decode(errors="replace").split())[:300]
        raise LogSearchError(f"the log store at {url} refused the query ({exc.code}): {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise LogSearchError(
            f"cannot reach the log store at {url} ({reason}): start the stack with `clawdbot-otel stack up`, "
            "or point --url at your VictoriaLogs"
        ) from None
    rows = [json.loads(line) for line in body.splitlines() if line.strip()]
    return [design_record(row) for row in rows]


def _table(records: list[dict[str, Any]]) -> Iterator[str]:
    for r in records:
        trace = f"  trace_id={r['trace_id']}" if "trace_id" in r else ""
        yield f"{r['timestamp']}  {r['level']:<5}  {r['component']:<10}  {r['message']}{trace}"


def register_log_search(logs_subparsers: Any, default_url: Callable[[], str]) -> None:
    """Add `search` to the `clawdbot-otel logs` command; `default_url()` names the store when --url is absent."""
    parser = logs_subparsers.add_parser(
        "search", help="the design's log records from the log store (VictoriaLogs), e.g. all logs of one trace",
        description="Search the log store. Filters combine (AND); --level is a floor (WARN finds WARN, ERROR, "
        "FATAL). Oldest first; with more matches than --limit, the newest ones.",
    )
    parser.add_argument("--trace-id", metavar="ID", help="32 hex digits: the logs written inside that trace")
    parser.add_argument("--level", type=str.upper, metavar="LEVEL", help="DEBUG, INFO, WARN, ERROR or FATAL")
    parser.add_argument("--component", metavar="C", help="log category, e.g. gateway, scheduler, audit")
    parser.add_argument("--since", default="1h", metavar="AGE", help="how far back: 30m, 1h, 7d (default 1h)")
    parser.add_argument("--limit", type=int, default=100, metavar="N", help="at most N records (default 100)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line (the design's record)")
    parser.add_argument("--url", metavar="URL",
                        help="the log store's query URL (default: the running native stack's, else "
                        "http://127.0.0.1:9428)")

    def run(args: argparse.Namespace) -> int:
        try:
            query = LogsQuery(args.trace_id, args.level, args.component, args.since, args.limit)
            url = args.url or default_url()
            records = search_logs(url, query)
        except (ValueError, LogSearchError) as exc:
            sys.stderr.write(f"clawdbot-otel logs search: {exc}\n")
            return 2
        if args.json:
            for record in records:
                sys.stdout.write(json.dumps(record, separators=(",", ":")) + "\n")
        else:
            for line in _table(records):
                sys.stdout.write(line + "\n")
            if not records:
                sys.stderr.write(f"no log records match ({query.logsql()}) at {url}\n")
        return 0

    parser.set_defaults(func=run)
