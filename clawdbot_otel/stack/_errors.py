"""The stack's one error type (a leaf module: the build steps and the launcher all raise it)."""

from __future__ import annotations

__all__ = ["StackError"]


class StackError(RuntimeError):
    """A stack operation failed for a reason the user can act on (the message says how)."""
