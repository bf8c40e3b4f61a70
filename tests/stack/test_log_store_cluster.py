"""The log store past one machine: VictoriaLogs v1.52.2 in cluster mode, natively on loopback.

The same binary the stack runs takes every role (docs.victoriametrics.com/victorialogs/cluster/): two
storage nodes (plain instances, each with its own data folder), an insert node (`-storageNode=` both, with
`-select.disable`: it takes /insert/* and spreads the records over the storage nodes) and a select node
(`-storageNode=` both, with `-insert.disable`: it queries every storage node and merges). An insert node
sends the first 1,000 records of a log stream to the storage node `stream hash % nodes`, so records of
different streams spread; each record here is its own stream.
"""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource

from clawdbot_otel import Telemetry
from clawdbot_otel.stack import StackError, find_binaries

from .conftest import TEST_PORT_OFFSET, logsql, server_process, wait_for

pytestmark = pytest.mark.stack

# 9440-9443 + the offset: apart from every port of the test stacks (theirs + 0, 100, 150, 300).
STORAGE_PORTS = (9440 + TEST_PORT_OFFSET, 9441 + TEST_PORT_OFFSET)
INSERT_PORT = 9442 + TEST_PORT_OFFSET
SELECT_PORT = 9443 + TEST_PORT_OFFSET
N_RECORDS = 24


def _url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def _cluster(tmp: Path) -> Iterator[None]:
    try:
        binary = str(find_binaries().victorialogs)
    except StackError as exc:
        pytest.fail(f"the VictoriaLogs binary is missing, so its cluster mode cannot run: {exc}", pytrace=False)
    nodes = ",".join(f"127.0.0.1:{port}" for port in STORAGE_PORTS)
    roles = [
        *((f"vlstorage-{i}", port, [f"-storageDataPath={tmp / f'vlstorage-{i}'}"])
          for i, port in enumerate(STORAGE_PORTS, 1)),
        ("vlinsert", INSERT_PORT, [f"-storageNode={nodes}", "-select.disable"]),
        ("vlselect", SELECT_PORT, [f"-storageNode={nodes}", "-insert.disable"]),
    ]
    with contextlib.ExitStack() as servers:
        for name, port, flags in roles:
            argv = [binary, f"-httpListenAddr=127.0.0.1:{port}", *flags, "-loggerLevel=WARN"]
            servers.enter_context(server_process(name, argv, tmp / f"{name}.log", f"{_url(port)}/health"))
        yield


def _insert_jsonline(rows: list[dict[str, Any]]) -> None:
    body = "\n".join(json.dumps(r) for r in rows).encode()
    req = urllib.request.Request(f"{_url(INSERT_PORT)}/insert/jsonline?_stream_fields=app", data=body, method="POST",
                                 headers={"Content-Type": "application/stream+json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200


def _status(req: urllib.request.Request) -> int:
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_records_written_through_the_insert_node_spread_over_two_storage_nodes_and_are_found_once(
        tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    with _cluster(tmp_path):
        # N records, each its own stream (app=cluster-i), as JSON lines; one more over OTLP/HTTP, the
        # protocol the collector speaks to the log store.
        _insert_jsonline([{"_msg": f"record {i} {run}", "app": f"cluster-{i}", "run": run} for i in range(N_RECORDS)])
        provider = LoggerProvider(resource=Resource.create({"service.name": f"cluster-otlp-{run}"}))
        provider.add_log_record_processor(SimpleLogRecordProcessor(
            OTLPLogExporter(endpoint=f"{_url(INSERT_PORT)}/insert/opentelemetry/v1/logs")))
        Telemetry(logger_provider=provider, log_sinks=[]).log("INFO", "gateway", f"otlp record {run}")
        provider.shutdown()

        def all_selected() -> list[dict[str, Any]] | None:
            rows = logsql(_url(SELECT_PORT), f'run:="{run}"')
            return rows if len(rows) >= N_RECORDS else None

        selected = wait_for(all_selected, 30, 0.5, f"{N_RECORDS} records through the select node")
        per_node = {port: {r["_msg"] for r in logsql(_url(port), f'run:="{run}"')} for port in STORAGE_PORTS}
        otlp = wait_for(lambda: logsql(_url(SELECT_PORT), f'"service.name":="cluster-otlp-{run}"'), 30, 0.5,
                        "the OTLP record through the select node")
        # Each role does only its part: the insert node answers no query, the select node takes no write.
        query_on_insert = _status(urllib.request.Request(f"{_url(INSERT_PORT)}/select/logsql/query?query=*"))
        write_on_select = _status(urllib.request.Request(f"{_url(SELECT_PORT)}/insert/jsonline", data=b"{}"))

    messages = [r["_msg"] for r in selected]
    expected = {f"record {i} {run}" for i in range(N_RECORDS)}
    assert sorted(messages) == sorted(expected), "the select node must return every record exactly once"
    assert set().union(*per_node.values()) == expected
    assert sum(len(m) for m in per_node.values()) == N_RECORDS, "a record is stored on one node only"
    assert all(0 < len(m) < N_RECORDS for m in per_node.values()), {p: len(m) for p, m in per_node.items()}
    assert [r["_msg"] for r in otlp] == [f"otlp record {run}"]
    assert query_on_insert >= 400 and write_on_select >= 400, (query_on_insert, write_on_select)
    print(f"\nrecords per storage node: { {f'vlstorage-{i}': len(per_node[p]) for i, p in enumerate(STORAGE_PORTS, 1)} }"
          f"; the select node found {len(messages)} of {N_RECORDS} (+1 over OTLP)")
