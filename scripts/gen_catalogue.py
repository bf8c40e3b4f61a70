"""Regenerate what derives from the catalogue as files: CATALOGUE.md (the tables) and
clawdbot_otel/conventions/_names.py (the names as Literal types). `python scripts/gen_catalogue.py`;
tests/core/test_generated.py fails while either is stale."""

from __future__ import annotations

from pathlib import Path

from clawdbot_otel.presentation import catalogue_markdown, catalogue_names_module

ROOT = Path(__file__).resolve().parents[1]
CATALOGUE_MD = ROOT / "CATALOGUE.md"
NAMES_PY = ROOT / "clawdbot_otel" / "conventions" / "_names.py"
CATALOGUE_HEADER = (
    "# Catalogue\n\n"
    "Every metric, span category and log field of the design, generated from `clawdbot_otel/conventions/` by\n"
    "`python scripts/gen_catalogue.py` (do not edit by hand; a test checks it is current).\n\n"
)


def generated() -> dict[Path, str]:
    """Each generated file and the text it must hold."""
    return {CATALOGUE_MD: CATALOGUE_HEADER + catalogue_markdown(), NAMES_PY: catalogue_names_module()}


def main() -> None:
    for path, text in generated().items():
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
