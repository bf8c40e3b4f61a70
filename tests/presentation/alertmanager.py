"""A webhook receiver for Alertmanager's notifications, as the alert tests run it on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclasses.dataclass(frozen=True)
class Notification:
    at: float  # time.monotonic()
    wall: float
    receiver: str
    payload: dict[str, Any]


class WebhookReceiver:
    """Alertmanager's webhook notifications, as they arrive (POST /<receiver name>)."""

    def __init__(self) -> None:
        self.notifications: list[Notification] = []
        self._lock = threading.Lock()
        received = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with received._lock:
                    received.notifications.append(
                        Notification(time.monotonic(), time.time(), self.path.strip("/"), json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def seen(self, alertname: str, status: str, labels: dict[str, str], after: float) -> list[Notification]:
        """Notifications after `after` carrying `alertname` (with `labels`) in state `status`."""
        with self._lock:
            return [n for n in self.notifications if n.at >= after and any(
                a["labels"].get("alertname") == alertname and a["status"] == status
                and all(a["labels"].get(k) == v for k, v in labels.items())
                for a in n.payload.get("alerts", ()))]
