"""One plain sentence when the OTLP endpoint speaks the other protocol than the exporters.

Pointed at a gRPC port with http/protobuf (or the reverse), every export fails with warnings that do
not say why ("BadStatusLine('\\x00\\x00...')", "Connection reset by peer", "Failed parsing HTTP/2"), once
per batch per signal. This handler watches the exporters' loggers for those signatures and writes once
what is wrong and the two ways to fix it; the exporters' own warnings still go where they went. A reset
connection can have many causes, so it only counts when the endpoint answers an HTTP/2 preface (probed
once, from the exporter's thread, which is waiting to retry anyway).
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
import urllib.parse
from collections.abc import Mapping
from typing import TextIO

__all__ = ["EXPORTER_LOGGER", "ProtocolMismatchHint", "speaks_http2"]

#: The parent logger of the SDK's OTLP exporters (http and grpc, every signal).
EXPORTER_LOGGER = "opentelemetry.exporter.otlp"
# An HTTP/1.1 client reading an HTTP/2 server's first SETTINGS frame as its status line.
_GRPC_ANSWERED_HTTP = ("BadStatusLine('\\x00\\x00",)
# A gRPC server that closed an HTTP/1.1 connection before answering (Go's does, most of the time).
_RESET = ("Connection reset by peer", "RemoteDisconnected")
# gRPC (HTTP/2) reaching an HTTP/1.1 server.
_HTTP_ANSWERED_GRPC = ("Failed parsing HTTP/2", "Trying to connect an http1.x server")
# The HTTP/2 client preface and an empty SETTINGS frame: an HTTP/2 server answers with its SETTINGS.
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
_SETTINGS_FRAME = 0x04


def speaks_http2(endpoint: str, timeout_s: float = 1.0) -> bool:
    """Whether the server at `endpoint` (a URL) answers an HTTP/2 preface with a SETTINGS frame."""
    url = urllib.parse.urlsplit(endpoint if "//" in endpoint else f"http://{endpoint}")
    try:
        with socket.create_connection((url.hostname or "127.0.0.1", url.port or 80), timeout=timeout_s) as conn:
            conn.sendall(_HTTP2_PREFACE)
            head = conn.recv(9)
    except OSError:
        return False
    return len(head) >= 4 and head[3] == _SETTINGS_FRAME


class ProtocolMismatchHint(logging.Handler):
    """A logging handler for EXPORTER_LOGGER that explains a protocol mismatch, once per process."""

    def __init__(self, env: Mapping[str, str], out: TextIO | None = None) -> None:
        super().__init__(logging.WARNING)
        self._configured = env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        self._endpoint = self._configured or "the OTLP endpoint"
        self._probed = False
        self._out = out
        self._said = False
        self._said_lock = threading.Lock()  # exporter threads of several signals may match at once

    def emit(self, record: logging.LogRecord) -> None:
        if self._said:
            return
        text = record.getMessage()
        reset = ".http." in record.name and any(s in text for s in _RESET)  # the HTTP exporters' resets
        if any(s in text for s in _GRPC_ANSWERED_HTTP) or (reset and self._probe()):
            line = self._explain(speaks="gRPC", sent="http/protobuf", port=4318)
        elif any(s in text for s in _HTTP_ANSWERED_GRPC):
            line = self._explain(speaks="OTLP/HTTP", sent="grpc", port=4317)
        else:
            return
        with self._said_lock:
            if self._said:
                return
            self._said = True
        out = self._out or sys.stderr
        out.write(line + "\n")
        out.flush()

    def _probe(self) -> bool:
        if self._probed or self._configured is None:
            return False
        self._probed = True
        return speaks_http2(self._configured)

    def _explain(self, *, speaks: str, sent: str, port: int) -> str:
        fix_protocol = "grpc" if sent == "http/protobuf" else "http/protobuf"
        return (
            f"clawdbot-otel: {self._endpoint} speaks {speaks}, but the exporters send {sent}, so every export "
            f"fails. Fix one of the two: point OTEL_EXPORTER_OTLP_ENDPOINT at the collector's {sent} port "
            f"(http://127.0.0.1:{port} for `clawdbot-otel stack up`), or keep the endpoint and set "
            f"OTEL_EXPORTER_OTLP_PROTOCOL={fix_protocol}."
        )
