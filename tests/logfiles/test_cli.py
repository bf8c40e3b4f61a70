"""`clawdbot-otel logs prune` and `logs retention-config`, and the package's public surface."""

from __future__ import annotations

import argparse
import gzip
import time
from pathlib import Path

import pytest

from clawdbot_otel import logfiles
from clawdbot_otel.logfiles import register


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="clawdbot-otel")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return int(args.func(args))


def rotated(folder: Path, day: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{folder.name}.{day}.0001.log.gz"
    path.write_bytes(gzip.compress(b"x\n" * 100))
    return path


def test_prune_dry_run_then_prune(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    today = time.strftime("%Y-%m-%d", time.gmtime())
    old_debug = rotated(tmp_path / "debug", "2020-01-01")
    old_audit = rotated(tmp_path / "audit", "2020-01-01")
    recent = rotated(tmp_path / "info", today)

    assert run(["logs", "prune", "--dry-run", "--log-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"would remove {old_audit} (audit, 2020-01-01, {old_audit.stat().st_size} B)"  # oldest first
    assert out[1].startswith(f"would remove {old_debug} (debug, 2020-01-01, ")
    assert out[2].startswith("would remove 2 file(s), ") and out[2].endswith(f"under {tmp_path}")
    assert old_debug.exists() and old_audit.exists()

    assert run(["logs", "prune", "--log-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("removed 2 file(s), ")
    assert not old_debug.exists() and not old_audit.exists() and recent.exists()

    assert run(["logs", "prune", "--log-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out == f"nothing past its retention under {tmp_path}\n"


def test_prune_uses_the_env_log_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CLAWDBOT_OTEL_LOG_DIR", str(tmp_path))
    old = rotated(tmp_path / "error", "2020-01-01")
    assert run(["logs", "prune"]) == 0
    assert not old.exists()
    assert capsys.readouterr().out.startswith(f"removed {old} (error, 2020-01-01, ")


def test_prune_of_a_root_that_is_a_file_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "f").write_bytes(b"")
    for dry_run in ([], ["--dry-run"]):
        assert run(["logs", "prune", *dry_run, "--log-dir", str(tmp_path / "f")]) == 0  # nothing there
        assert "nothing past its retention" in capsys.readouterr().out


def test_prune_reports_what_it_removed_before_a_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    first = rotated(tmp_path / "debug", "2020-01-01")
    second = rotated(tmp_path / "info", "2020-01-02")
    real_unlink = Path.unlink

    def unlink(self: Path, missing_ok: bool = False) -> None:
        if self == second:
            raise PermissionError(13, "Permission denied", str(self))
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", unlink)
    assert run(["logs", "prune", "--log-dir", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    [removed] = out.splitlines()  # the file removed before the failure, and no summary
    assert removed.startswith(f"removed {first} (debug, 2020-01-01, ")
    assert f"Permission denied: '{second}'" in err and "(removed 1 file(s) before the error)" in err
    assert not first.exists() and second.exists()


def test_prune_of_a_destination_moved_elsewhere(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    moved = rotated(tmp_path / "volatile" / "debug", "2020-01-01")
    assert run(["logs", "prune", "--log-dir", str(tmp_path / "root"), "--dir", f"debug={moved.parent}"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"removed {moved} (debug, ")
    assert out[1].endswith(f"under {tmp_path / 'root'}, debug/ in {moved.parent}")
    assert not moved.exists()

    assert run(["logs", "prune", "--log-dir", str(tmp_path), "--dir", f"trace={tmp_path}"]) == 2
    assert "unknown log destination(s) trace: use one of debug, info" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run(["logs", "prune", "--dir", "debug"])
    assert "expected DESTINATION=FOLDER" in capsys.readouterr().err


def test_prune_help_shows_the_policy(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        run(["logs", "prune", "--help"])
    lines = capsys.readouterr().out.splitlines()
    for row in logfiles.RETENTION_POLICY:
        [entry] = [x for x in lines if x.strip().startswith(f"{row.destination}/ ")]
        assert entry.endswith(row.description)
    assert any(x.split()[:3] == ["info/", "7", "days"] for x in lines)


def test_retention_config_prints_the_collector_log_pipelines(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["logs", "retention-config"]) == 0
    assert capsys.readouterr().out == logfiles.collector_log_routing_config()

