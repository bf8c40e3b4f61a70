"""The Jaeger UI for the native Jaeger: built static files installed into <cache>/jaeger-ui/assets.

`go build` of the Jaeger module embeds only a placeholder page (the UI is a separate JavaScript project), so
`stack build` installs a built jaeger-ui and the launcher points `jaeger_query.ui.assets_path` at it. The
source, first match wins:

1. `--jaeger-ui PATH`: a jaeger-ui build folder (index.html next to static/) or a .tar.gz of one;
2. the installation already in the cache (from any source);
3. ../shared/jaeger-ui/jaeger-ui-<version>.tar.gz beside the checkout (tests and CI), accepted only when its
   sha256 is the one that folder's README gives;
4. with `--download-jaeger-ui`: upstream's release assets.tar.gz of the same version (its sha256 printed);

otherwise there is no UI: Jaeger still serves the query API, and one line says how to add the UI. The UI's
files never go into the repository.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from . import _versions as v
from ._errors import StackError

__all__ = ["install_jaeger_ui", "installed_jaeger_ui", "shared_jaeger_ui_tarball"]

Progress = Callable[[str], None]
_STAMP = "assets.json"


def _ui_root(cache: Path) -> Path:
    return cache / "jaeger-ui"


def installed_jaeger_ui(cache: Path) -> Path | None:
    """The installed UI folder (for `jaeger_query.ui.assets_path`), or None when there is none."""
    assets = _ui_root(cache) / "assets"
    return assets if (assets / "index.html").is_file() and (assets / "static").is_dir() else None


def shared_jaeger_ui_tarball(repo: Path) -> Path:
    """Where the shared build of the pinned UI version sits, beside the checkout."""
    return repo.parent / "shared" / "jaeger-ui" / f"jaeger-ui-{v.JAEGER_UI_VERSION}.tar.gz"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _documented_sha256(readme: Path) -> str | None:
    """The tarball's sha256 as the shared folder's README gives it (a table row naming sha256)."""
    try:
        text = readme.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        found = re.search(r"\b([0-9a-f]{64})\b", line)
        if found and "sha256" in line.lower():
            return found.group(1)
    return None


def _build_folder(tree: Path) -> Path:
    """The shallowest folder under `tree` holding a jaeger-ui build: index.html next to static/.

    A tarball of the build folder has them at its top; upstream's assets.tar.gz under packages/jaeger-ui/build/.
    """
    found = sorted(
        (index.parent for index in tree.rglob("index.html") if (index.parent / "static").is_dir()),
        key=lambda folder: len(folder.parts),
    )
    if not found:
        raise StackError(f"{tree} holds no jaeger-ui build (index.html next to a static/ folder)")
    return found[0]


class _Installer:
    """Copies a jaeger-ui build into <cache>/jaeger-ui/assets atomically, with a stamp naming its source."""

    def __init__(self, cache: Path) -> None:
        self.root = _ui_root(cache)

    def __call__(self, source: Path, described_as: str, sha256: str | None) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.root, prefix=".install-") as tmp:
            staging = Path(tmp)
            if source.is_dir():
                build = _build_folder(source)
            else:
                try:
                    with tarfile.open(source, "r:*") as archive:
                        archive.extractall(staging / "unpacked", filter="data")
                except (tarfile.TarError, OSError) as exc:
                    raise StackError(f"cannot unpack {source} ({exc}): pass a jaeger-ui tarball or folder") from exc
                build = _build_folder(staging / "unpacked")
            shutil.copytree(build, staging / "assets")
            assets = self.root / "assets"
            if assets.exists():
                os.replace(assets, staging / "previous")  # removed with the temporary folder
            os.replace(staging / "assets", assets)
        stamp = {"source": described_as, "sha256": sha256, "version": v.JAEGER_UI_VERSION}
        (self.root / _STAMP).write_text(json.dumps(stamp, indent=2) + "\n")
        return assets

    def source(self) -> str:
        try:
            return str(json.loads((self.root / _STAMP).read_text())["source"])
        except (OSError, ValueError, KeyError):
            return "unknown source"


def _download(url: str, into: Path, progress: Progress, label: str) -> tuple[Path, str]:
    target = into / "assets.tar.gz"
    progress(f"{label}: downloading {url}…")
    try:
        with urllib.request.urlopen(url, timeout=120) as resp, target.open("wb") as out:
            shutil.copyfileobj(resp, out)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise StackError(
            f"cannot download {url} ({reason}): fetch it on another machine and pass it with --jaeger-ui PATH"
        ) from exc
    digest = _sha256(target)
    progress(f"{label}: downloaded {url}: sha256 {digest}")
    return target, digest


def install_jaeger_ui(
    cache: Path,
    repo: Path,
    *,
    source: Path | None,
    download: bool,
    force: bool,
    step: str,
    progress: Progress,
) -> Path | None:
    """Install (or find) the UI; returns its folder, or None after saying how to add it."""
    label = f"{step} jaeger-ui {v.JAEGER_UI_VERSION}"
    install = _Installer(cache)
    if source is not None:
        source = source.expanduser().resolve()
        if not source.exists():
            raise StackError(f"--jaeger-ui {source}: no such file or folder")
        digest = None if source.is_dir() else _sha256(source)
        folder = install(source, str(source), digest)
        progress(f"{label}: installed from {source}" + (f" (sha256 {digest})" if digest else "") + f" ({folder})")
        return folder
    current = installed_jaeger_ui(cache)
    if current is not None and not force and not download:
        progress(f"{label}: cached ({current}, from {install.source()})")
        return current
    shared = shared_jaeger_ui_tarball(repo)
    if shared.is_file() and not download:
        readme = shared.parent / "README.md"
        expected = _documented_sha256(readme)
        digest = _sha256(shared)
        if expected is None:
            raise StackError(f"{readme} gives no sha256 for {shared.name}: cannot check it; pass --jaeger-ui PATH")
        if digest != expected:
            raise StackError(
                f"{shared}: sha256 {digest} differs from {expected} in {readme}: the file is damaged or not the "
                "documented build; restore it, or pass another build with --jaeger-ui PATH"
            )
        folder = install(shared, str(shared), digest)
        progress(f"{label}: installed from {shared} (sha256 {digest}, as its README says) ({folder})")
        return folder
    if download:
        with tempfile.TemporaryDirectory(prefix="jaeger-ui-") as tmp:
            tarball, digest = _download(v.JAEGER_UI_RELEASE_URL, Path(tmp), progress, label)
            folder = install(tarball, v.JAEGER_UI_RELEASE_URL, digest)
        progress(f"{label}: installed ({folder})")
        return folder
    if current is not None:  # --force with nothing to reinstall from: keep what is there
        progress(f"{label}: cached ({current}, from {install.source()})")
        return current
    progress(
        f"{label}: not installed; Jaeger serves its query API (/api/traces) and a placeholder page. Add the UI "
        "with `clawdbot-otel stack build --jaeger-ui PATH` (a jaeger-ui build folder or tarball) or "
        "`clawdbot-otel stack build --download-jaeger-ui` (upstream's release assets)"
    )
    return None
