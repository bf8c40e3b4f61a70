"""The WebSocket opening handshake as the proxy's byte relay sees it (RFC 6455 section 4): the client's
upgrade request, the one the relay sends upstream with the same key (so that the upstream's 101 answers
the client as it is), and the few answers the relay writes itself: an HTTP error, or a 101 and a close
frame when the upstream cannot be reached."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from websockets.headers import build_authorization_basic, build_host
from websockets.uri import WebSocketURI

__all__ = [
    "MAX_HEAD_BYTES",
    "HandshakeError",
    "UpgradeRequest",
    "accept_response",
    "close_frame",
    "error_response",
    "head_end",
    "parse_upgrade",
    "response_status",
    "upstream_request",
]

#: An HTTP head larger than this is refused (websockets allows 128 headers of up to 8 KiB each; no
#: WebSocket client sends more than a few KiB).
MAX_HEAD_BYTES = 64 * 1024
_END = b"\r\n\r\n"
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_BROWSER_HINT = "\nYou cannot access a WebSocket server directly with a browser. You need a WebSocket client.\n"
_REASONS = {400: "Bad Request", 426: "Upgrade Required"}


class HandshakeError(Exception):
    """A request the relay answers itself with `status` (400, or 426 for a request that is no upgrade)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class UpgradeRequest:
    """A client's valid upgrade request: its headers (lower-case names, in order) and its key."""

    headers: tuple[tuple[str, str], ...]
    key: str

    def get(self, name: str) -> str | None:
        return next((value for key, value in self.headers if key == name), None)


def head_end(buf: bytes | bytearray) -> int:
    """Where the HTTP head in `buf` ends (after its blank line), or -1 while it is incomplete."""
    end = buf.find(_END)
    if end < 0:
        if len(buf) > MAX_HEAD_BYTES:
            raise HandshakeError(400, "HTTP head too large")
        return -1
    return end + len(_END)


def _tokens(value: str | None) -> set[str]:
    return {token.strip().lower() for token in (value or "").split(",")}


def parse_upgrade(head: bytes) -> UpgradeRequest:
    """The client's request (everything up to and including its blank line), checked as websockets'
    server checks it: a GET over HTTP/1.1 asking to upgrade to websocket, version 13, a 16-byte key."""
    lines = head.decode("iso-8859-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[2] != "HTTP/1.1":
        raise HandshakeError(400, f"invalid HTTP request line: {lines[0][:80]}")
    if parts[0] != "GET":
        raise HandshakeError(400, f"unsupported HTTP method; expected GET; got {parts[0][:20]}")
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise HandshakeError(400, f"invalid HTTP header line: {line[:80]}")
        headers.append((name.lower(), value.strip()))
    request = UpgradeRequest(tuple(headers), "")
    connection = ", ".join(v for k, v in headers if k == "connection")
    if "upgrade" not in _tokens(connection):
        raise HandshakeError(426, f"invalid Connection header: {connection}" if connection
                             else "missing Connection header")
    upgrade = request.get("upgrade")
    if "websocket" not in _tokens(upgrade):
        raise HandshakeError(426, f"invalid Upgrade header: {upgrade}" if upgrade else "missing Upgrade header")
    keys = [v for k, v in headers if k == "sec-websocket-key"]
    try:
        valid_key = len(keys) == 1 and len(base64.b64decode(keys[0], validate=True)) == 16
    except ValueError:
        valid_key = False
    if not valid_key:
        raise HandshakeError(400, "invalid Sec-WebSocket-Key header" if keys else "missing Sec-WebSocket-Key header")
    if request.get("sec-websocket-version") != "13":
        raise HandshakeError(400, "invalid Sec-WebSocket-Version header")
    return UpgradeRequest(request.headers, keys[0])


def error_response(error: HandshakeError) -> bytes:
    """The relay's answer to a request it cannot upgrade, worded as websockets' server words it."""
    body = f"Failed to open a WebSocket connection: {error}.\n"
    extra = ""
    if error.status == 426:
        body += _BROWSER_HINT
        extra = "Upgrade: websocket\r\n"
    data = body.encode()
    return (f"HTTP/1.1 {error.status} {_REASONS[error.status]}\r\n{extra}Connection: close\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(data)}\r\n\r\n").encode() + data


def upstream_request(uri: WebSocketURI, request: UpgradeRequest, forwarded: tuple[str, ...]) -> bytes:
    """The upgrade request for the upstream: the upstream URL's path and Host, the client's key, and of the
    client's headers only `forwarded` ones (no Sec-WebSocket-Extensions: frames are never compressed;
    no subprotocols, as before)."""
    lines = [f"GET {uri.resource_name} HTTP/1.1", f"Host: {build_host(uri.host, uri.port, uri.secure)}"]
    if uri.user_info and request.get("authorization") is None:
        lines.append(f"Authorization: {build_authorization_basic(*uri.user_info)}")
    lines += ["Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Key: {request.key}",
              "Sec-WebSocket-Version: 13"]
    lines += [f"{name}: {value}" for name, value in request.headers if name in forwarded]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("iso-8859-1")


def response_status(head: bytes) -> int:
    """The status code of an HTTP response head (0 when it is no HTTP/1.1 response)."""
    parts = head[:64].split(b" ", 2)
    if len(parts) < 2 or parts[0] != b"HTTP/1.1" or not parts[1].isdigit():
        return 0
    return int(parts[1])


def accept_response(key: str) -> bytes:
    """The 101 the relay writes itself (only to say, with a close frame, that the upstream is down)."""
    accept = base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()  # RFC 6455 names SHA-1
    return (f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept}\r\n\r\n").encode()


def close_frame(code: int, reason: str) -> bytes:
    """An unmasked close frame (server to client); the reason cut to the 123 bytes a close frame holds."""
    payload = code.to_bytes(2, "big") + reason.encode()[:123].decode(errors="ignore").encode()
    return bytes((0x88, len(payload))) + payload
