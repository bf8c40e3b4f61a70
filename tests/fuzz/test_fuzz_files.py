"""Arbitrary files in the watched folders: bytes of any kind and size, records with any field replaced,
FIFOs, directories and symlinks where files belong, files deleted, cut short or replaced between scans.
The watchers never fail (no `internal_error`), every reason they give is a documented one, and what they
remember of a file goes when the file goes."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clawdbot_otel.testing import capture_telemetry
from tests.collect.helpers import FakeClock, source_errors
from tests.collect.test_collect_faults import CASES, Case

pytestmark = pytest.mark.timeout(300)

_FOLDERS = {"spawn_queue": ["requests", "responses"], "inbox": ["main", "main/archive", "main/failed", "worker"],
            "heartbeat": ["."]}
_REASONS = {"malformed_json", "partial_write", "binary", "vanished", "unreadable", "not_a_file", "invalid_fields",
            "oversized", "not_a_directory", "missing"}
_KINDS = ["bytes", "json", "record", "record", "big", "fifo", "dir", "dangling", "loop", "link_dir", "link_file"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=8)
names = st.text(st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)), min_size=1, max_size=16) \
    .filter(lambda n: n not in (".", "..")).map(lambda n: n[:16])
files = st.lists(st.tuples(st.integers(0, 3), names, st.sampled_from([".json", ".json", ".tmp", ""]),
                           st.sampled_from(_KINDS), st.binary(max_size=200), json_values,
                           st.dictionaries(st.text(max_size=12), json_values, max_size=3)),
                 max_size=10)
changes = st.lists(st.tuples(st.integers(0, 9), st.sampled_from(["delete", "cut", "garbage", "chmod"])), max_size=5)


def _write(case: Case, root: Path, spec: tuple[Any, ...]) -> Path | None:
    folder_index, name, suffix, kind, raw, value, replaced = spec
    folders = _FOLDERS[case.source]
    folder = root / folders[folder_index % len(folders)]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (name + suffix)
    if path.exists() or path.is_symlink():
        return None
    try:
        if kind == "bytes":
            path.write_bytes(raw)
        elif kind == "json":
            path.write_text(json.dumps(value))
        elif kind == "record":
            path.write_text(json.dumps({**case.good, **replaced}))
        elif kind == "big":
            path.write_bytes(b'{"pad": "' + b"x" * 8000 + b'"}')
        elif kind == "fifo":
            os.mkfifo(path)
        elif kind == "dir":
            path.mkdir()
        elif kind == "dangling":
            path.symlink_to(folder / "nowhere")
        elif kind == "loop":
            path.symlink_to(path)
        elif kind == "link_dir":
            path.symlink_to(root)
        else:
            path.symlink_to(Path(os.devnull))
    except OSError:  # a name the file system refuses (too long for it, ...): not the watcher's input
        return None
    return path


def _change(path: Path, change: str) -> None:
    if not path.is_file() or path.is_symlink():
        return
    if change == "delete":
        path.unlink()
    elif change == "cut":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif change == "garbage":
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(16))
    else:
        path.chmod(0)


def _remove_all(root: Path, folders: list[str]) -> None:
    """Everything goes; the watched folders come back empty."""
    shutil.rmtree(root)
    for folder in folders:
        (root / folder).mkdir(parents=True, exist_ok=True)


@pytest.mark.parametrize("case", CASES, ids=[c.source for c in CASES])
@settings(max_examples=max(20, settings.default.max_examples // 2))  # each example writes a folder tree
@given(specs=files, later=changes)
def test_arbitrary_files_never_fail_a_watcher_and_are_forgotten_when_gone(
        case: Case, specs: list[tuple[Any, ...]], later: list[tuple[int, str]]) -> None:
    with tempfile.TemporaryDirectory() as tmp, capture_telemetry(strict=False) as cap:
        root = Path(tmp) / case.source
        for folder in _FOLDERS[case.source]:
            (root / folder).mkdir(parents=True, exist_ok=True)
        clock = FakeClock()
        watcher = case.make(cap.telemetry, root, clock)
        written = [p for p in (_write(case, root, spec) for spec in specs) if p is not None]
        watcher.scan_once()
        for index, change in later:
            if written:
                _change(written[index % len(written)], change)
        clock.advance(60)  # past the grace for half-written files
        watcher.scan_once()
        watcher.scan_once()
        errors = source_errors(cap, case.source)
        assert "internal_error" not in errors, [r for r in cap.log_lines() if "internal" in str(r)]
        assert set(errors) <= _REASONS
        _remove_all(root, _FOLDERS[case.source])
        watcher.scan_once()
        remembered = {name: len(value) for name, value in vars_of(watcher).items() if isinstance(value, dict)}
        assert all(n == 0 for n in remembered.values()), remembered
        cap.collect_metrics()


def vars_of(watcher: Any) -> dict[str, Any]:
    """The watcher's per-file memory (its dicts keyed by file or id)."""
    return {name: getattr(watcher, name) for name in ("_requests", "_answers", "_messages", "_states")
            if hasattr(watcher, name)}
