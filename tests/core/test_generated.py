"""Files generated from the catalogue are current, and its names are types the type checker enforces."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("gen_catalogue", ROOT / "scripts" / "gen_catalogue.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_files_are_current() -> None:
    stale = [str(path.relative_to(ROOT)) for path, text in _generator().generated().items()
             if not path.exists() or path.read_text() != text]
    assert stale == [], "stale: run `python scripts/gen_catalogue.py`"


def test_the_type_checker_catches_a_misspelled_metric_or_span_category(tmp_path: Path) -> None:
    snippet = tmp_path / "call_sites.py"
    snippet.write_text(
        "import clawdbot_otel as telemetry\n"
        "telemetry.increment('gateway_requests_total', {'method': 'agent', 'status': 'success'})\n"
        "telemetry.increment('gateway_request_total')\n"
        "telemetry.histogram('gateway_requests_total', 1.0)\n"
        "telemetry.start_span('tool_calls')\n"
    )
    done = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-error-summary", str(snippet)],
                          cwd=ROOT, capture_output=True, text=True, check=False, timeout=300)
    errors = [line for line in done.stdout.splitlines() if ": error: " in line]
    # line 2 is right; 3 misspells a counter, 4 gives a counter to histogram(), 5 misspells a category
    assert [line.split(":")[1] for line in errors] == ["3", "4", "5"], done.stdout
    assert all('expected "Literal[' in line for line in errors), done.stdout
