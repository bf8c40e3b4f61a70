"""Secret redaction and size caps for captured content (tool params and results, log metadata).

Runs only on opt-in content and on log metadata, never on the metric hot path.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["REDACTED", "Redactor", "is_secret_key"]

REDACTED = "[REDACTED]"

_SECRET_WORDS = frozenset(
    {"password", "passwd", "pwd", "pass", "secret", "token", "auth", "authorization", "credential",
     "credentials", "cookie", "apikey", "passphrase", "signature"}
)
_SECRET_JOINED = ("apikey", "privatekey", "secretkey", "accesskey", "clientsecret")
_WORD_SPLIT = re.compile(r"[^a-z0-9]+")


@functools.lru_cache(maxsize=1024)
def is_secret_key(key: str) -> bool:
    """A mapping key whose value is a secret: its last word is one (`db_password`, `access_token`,
    `Authorization`) or it spells one (`api_key`, `x-api-key`); `input_tokens` and `session_key` are not."""
    lowered = key.lower()
    words = [w for w in _WORD_SPLIT.split(lowered) if w]
    if words and words[-1] in _SECRET_WORDS:
        return True
    joined = "".join(words)
    return any(j in joined for j in _SECRET_JOINED)

# Order matters: the URL userinfo and bearer patterns keep their prefix and hide the secret part.
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 " + REDACTED),
    (re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]+:)[^@\s/]+@"), r"\1" + REDACTED + "@"),
    (re.compile(r"\b(sk|pk|rk)-(ant-|proj-|live-|test-)?[A-Za-z0-9_-]{16,}"), REDACTED),
    (re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"), REDACTED),
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b"), REDACTED),
    (re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"), REDACTED),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"), REDACTED),
    (
        re.compile(
            r"(?i)\b((?:api[-_]?key|apikey|token|secret|password|passwd|pwd|access[-_]?key)\s*[=:]\s*)"
            r"(\"[^\"]*\"|'[^']*'|[^\s&,;\"']+)"
        ),
        r"\1" + REDACTED,
    ),
)


# Every pattern above needs one of these substrings: a string without any is returned as it is after a
# single scan instead of eight (log metadata is mostly ids, names and statuses).
_TRIGGER = re.compile(r"(?i)bearer|basic|://|[spr]k-|akia|asia|gh[pousr]_|xox[abprs]-|eyj|key|token|secret|pass|pwd")


class Redactor:
    """Hides secrets in strings and mappings and caps their size.

    `max_chars` caps each string; `max_items` caps the entries of a mapping or sequence;
    `max_depth` stops recursion into nested structures.
    """

    __slots__ = ("max_chars", "max_depth", "max_items")

    def __init__(self, max_chars: int = 1024, max_items: int = 32, max_depth: int = 4) -> None:
        self.max_chars = max_chars
        self.max_items = max_items
        self.max_depth = max_depth

    def text(self, value: str) -> str:
        if _TRIGGER.search(value) is not None:
            for pattern, replacement in _PATTERNS:
                value = pattern.sub(replacement, value)
        if len(value) > self.max_chars:
            cut = len(value) - self.max_chars
            value = f"{value[: self.max_chars]}…[+{cut} chars]"
        return value

    def value(self, value: Any, depth: int = 0) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if value is None or isinstance(value, bool | int | float):
            return value
        if depth >= self.max_depth:
            return self.text(repr(value))
        if isinstance(value, Mapping):
            return self.mapping(value, depth + 1)
        if isinstance(value, list | tuple | set | frozenset):
            items = list(value)
            out = [self.value(v, depth + 1) for v in items[: self.max_items]]
            if len(items) > self.max_items:
                out.append(f"…[+{len(items) - self.max_items} items]")
            return out
        if isinstance(value, bytes):
            return f"<{len(value)} bytes>"
        return self.text(str(value))

    def mapping(self, mapping: Mapping[Any, Any], depth: int = 0) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for i, (key, value) in enumerate(mapping.items()):
            if i >= self.max_items:
                out["…"] = f"[+{len(mapping) - self.max_items} keys]"
                break
            name = str(key)
            if is_secret_key(name) and value not in (None, ""):
                out[name] = REDACTED
            else:
                out[name] = self.value(value, depth)
        return out
