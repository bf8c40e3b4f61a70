"""The protocol-mismatch hint against real servers: a gRPC (HTTP/2) server and an HTTP/1.1 one."""

from __future__ import annotations

import http.server
import io
import logging
import threading
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest

from clawdbot_otel._export_hint import ProtocolMismatchHint, speaks_http2

HTTP_LOGGER = "opentelemetry.exporter.otlp.proto.http.trace_exporter"
RESET = "Transient error ('Connection aborted.', ConnectionResetError(104, 'Connection reset by peer'))"


@pytest.fixture
def grpc_endpoint() -> Iterator[str]:
    server = grpc.server(futures.ThreadPoolExecutor(1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop(None)


@pytest.fixture
def http_endpoint() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _record(name: str, message: str) -> logging.LogRecord:
    return logging.LogRecord(name, logging.WARNING, __file__, 1, message, None, None)


def test_speaks_http2_tells_grpc_from_http(grpc_endpoint: str, http_endpoint: str) -> None:
    assert speaks_http2(grpc_endpoint)
    assert not speaks_http2(http_endpoint)


def test_a_reset_from_a_grpc_endpoint_is_explained_once(grpc_endpoint: str) -> None:
    out = io.StringIO()
    hint = ProtocolMismatchHint({"OTEL_EXPORTER_OTLP_ENDPOINT": grpc_endpoint}, out)
    for _ in range(3):
        hint.emit(_record(HTTP_LOGGER, RESET))
    assert out.getvalue().count(f"{grpc_endpoint} speaks gRPC, but the exporters send http/protobuf") == 1


def test_a_reset_from_an_http_endpoint_is_not_a_protocol_mismatch(http_endpoint: str) -> None:
    out = io.StringIO()
    hint = ProtocolMismatchHint({"OTEL_EXPORTER_OTLP_ENDPOINT": http_endpoint}, out)
    hint.emit(_record(HTTP_LOGGER, RESET))
    assert out.getvalue() == ""
