"""`stack build`'s Jaeger UI step: where the UI comes from, the sha256 checks, and the lines it prints.

No servers here: the UI is installed into a temporary cache from the shared build (../shared/jaeger-ui, which
tests and CI have beside the checkout), from a tarball or folder given with --jaeger-ui, or downloaded from a
local HTTP server standing in for upstream's release page.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import shutil
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from clawdbot_otel.conventions import COMMON_ATTRIBUTES, SPAN_CATEGORIES_BY_NAME
from clawdbot_otel.stack import StackError, repo_root
from clawdbot_otel.stack import _versions as versions
from clawdbot_otel.stack._jaeger_ui import install_jaeger_ui, installed_jaeger_ui, shared_jaeger_ui_tarball

STEP = "[6/7]"
LABEL = f"{STEP} jaeger-ui {versions.JAEGER_UI_VERSION}"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def shared_tarball() -> Path:
    tarball = shared_jaeger_ui_tarball(repo_root())
    if not tarball.is_file():
        pytest.fail(f"{tarball} is missing: the UI tests need the shared jaeger-ui build beside the checkout")
    return tarball


@pytest.fixture
def upstream_layout(shared_tarball: Path, tmp_path: Path) -> Path:
    """The shared build repacked the way upstream's release assets.tar.gz holds it."""
    unpacked = tmp_path / "unpacked"
    with tarfile.open(shared_tarball) as archive:
        archive.extractall(unpacked / "packages" / "jaeger-ui" / "build", filter="data")
    tarball = tmp_path / "assets.tar.gz"
    with tarfile.open(tarball, "w:gz") as archive:
        archive.add(unpacked / "packages", arcname="packages")
    return tarball


def _lone_repo(tmp_path: Path, readme_sha: str | None = None, tarball: Path | None = None) -> Path:
    """A checkout folder with (optionally) a shared jaeger-ui folder beside it."""
    repo = tmp_path / "checkout" / "repo"
    repo.mkdir(parents=True)
    if tarball is not None:
        shared = repo.parent / "shared" / "jaeger-ui"
        shared.mkdir(parents=True)
        shutil.copy2(tarball, shared / tarball.name)
        (shared / "README.md").write_text(f"| Tarball sha256 | `{readme_sha}` |\n")
    return repo


def _install(cache: Path, repo: Path, lines: list[str], **kwargs: object) -> Path | None:
    options: dict[str, object] = {"source": None, "download": False, "force": False, **kwargs}
    return install_jaeger_ui(cache, repo, step=STEP, progress=lines.append, **options)  # type: ignore[arg-type]


def test_the_shared_build_is_installed_when_its_sha256_is_the_readmes(shared_tarball: Path, tmp_path: Path) -> None:
    digest = _sha256(shared_tarball)
    assert digest in (shared_tarball.parent / "README.md").read_text()
    cache = tmp_path / "cache"
    lines: list[str] = []
    folder = _install(cache, repo_root(), lines)
    assert folder == cache / "jaeger-ui" / "assets" == installed_jaeger_ui(cache)
    assert "<title>Jaeger UI</title>" in (folder / "index.html").read_text()
    assert any(p.name.startswith("index-") and p.suffix == ".js" for p in (folder / "static").iterdir())
    assert lines == [f"{LABEL}: installed from {shared_tarball} (sha256 {digest}, as its README says) ({folder})"]
    _install(cache, repo_root(), lines)
    assert lines[1] == f"{LABEL}: cached ({folder}, from {shared_tarball})"


def test_a_shared_build_whose_sha256_differs_from_its_readme_is_refused(shared_tarball: Path, tmp_path: Path) -> None:
    repo = _lone_repo(tmp_path, readme_sha="0" * 64, tarball=shared_tarball)
    with pytest.raises(StackError) as err:
        _install(tmp_path / "cache", repo, [])
    shared = repo.parent / "shared" / "jaeger-ui"
    assert str(err.value) == (
        f"{shared / shared_tarball.name}: sha256 {_sha256(shared_tarball)} differs from {'0' * 64} in "
        f"{shared / 'README.md'}: the file is damaged or not the documented build; restore it, or pass another "
        "build with --jaeger-ui PATH"
    )
    assert installed_jaeger_ui(tmp_path / "cache") is None


def test_jaeger_ui_flag_takes_upstreams_layout_and_replaces_the_cached_ui(
    shared_tarball: Path, upstream_layout: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    _install(cache, repo_root(), [])
    lines: list[str] = []
    folder = _install(cache, repo_root(), lines, source=upstream_layout)
    assert folder is not None and (folder / "index.html").is_file() and (folder / "static").is_dir()
    assert not (folder / "packages").exists()
    assert lines == [f"{LABEL}: installed from {upstream_layout} (sha256 {_sha256(upstream_layout)}) ({folder})"]
    assert json.loads((cache / "jaeger-ui" / "assets.json").read_text())["source"] == str(upstream_layout)


def test_jaeger_ui_flag_takes_a_build_folder(upstream_layout: Path, tmp_path: Path) -> None:
    with tarfile.open(upstream_layout) as archive:
        archive.extractall(tmp_path / "src", filter="data")
    lines: list[str] = []
    folder = _install(tmp_path / "cache", _lone_repo(tmp_path), lines, source=tmp_path / "src")
    assert folder is not None and (folder / "index.html").is_file()
    assert lines == [f"{LABEL}: installed from {tmp_path / 'src'} ({folder})"]


def test_a_tarball_without_a_ui_build_is_refused(tmp_path: Path) -> None:
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "index.html").write_text("<html></html>")
    with tarfile.open(tmp_path / "junk.tar.gz", "w:gz") as archive:
        archive.add(tmp_path / "junk", arcname="junk")
    with pytest.raises(StackError, match=r"holds no jaeger-ui build \(index.html next to a static/ folder\)$"):
        _install(tmp_path / "cache", _lone_repo(tmp_path), [], source=tmp_path / "junk.tar.gz")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def release_server(upstream_layout: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A local stand-in for upstream's release download URL, serving assets.tar.gz."""
    handler = functools.partial(_QuietHandler, directory=str(upstream_layout.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/{upstream_layout.name}"
    monkeypatch.setattr(versions, "JAEGER_UI_RELEASE_URL", url)
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_download_is_asked_for_and_prints_the_sha256(release_server: str, upstream_layout: Path, tmp_path: Path
                                                     ) -> None:
    cache = tmp_path / "cache"
    lines: list[str] = []
    folder = _install(cache, _lone_repo(tmp_path), lines, download=True)
    assert folder is not None and (folder / "index.html").is_file()
    assert lines == [
        f"{LABEL}: downloading {release_server}…",
        f"{LABEL}: downloaded {release_server}: sha256 {_sha256(upstream_layout)}",
        f"{LABEL}: installed ({folder})",
    ]


def test_an_unreachable_download_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = "http://127.0.0.1:9/assets.tar.gz"  # discard port: nothing listens
    monkeypatch.setattr(versions, "JAEGER_UI_RELEASE_URL", url)
    with pytest.raises(StackError, match=r"^cannot download http://127\.0\.0\.1:9/assets\.tar\.gz \(.*\): fetch it on "
                       r"another machine and pass it with --jaeger-ui PATH$"):
        _install(tmp_path / "cache", _lone_repo(tmp_path), [], download=True)


def test_without_any_source_one_line_says_the_api_works_and_how_to_add_the_ui(tmp_path: Path) -> None:
    lines: list[str] = []
    assert _install(tmp_path / "cache", _lone_repo(tmp_path), lines) is None
    assert lines == [
        f"{LABEL}: not installed; Jaeger serves its query API (/api/traces) and a placeholder page. Add the UI with "
        "`clawdbot-otel stack build --jaeger-ui PATH` (a jaeger-ui build folder or tarball) or "
        "`clawdbot-otel stack build --download-jaeger-ui` (upstream's release assets)"
    ]


def test_ui_config_lists_session_and_tool_attributes_first_genai_at_the_top(repo: Path) -> None:
    """Jaeger's UI sorts a span's tags by `topTagPrefixes`, the rest alphabetically (below otel.*, span.kind...):
    every attribute the catalogue gives session and tool spans sits under a prefix, the gen_ai.* ones first."""
    prefixes = json.loads((repo / "deploy" / "jaeger" / "ui-config.json").read_text())["topTagPrefixes"]
    assert prefixes[0] == "gen_ai."
    keys = {a.key for a in COMMON_ATTRIBUTES}
    for name in ("session", "tool_call"):
        keys |= {a.key for a in SPAN_CATEGORIES_BY_NAME[name].attributes}
    assert any(k.startswith("gen_ai.") for k in keys)
    assert sorted(k for k in keys if not any(k.startswith(p) for p in prefixes)) == []
