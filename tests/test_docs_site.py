"""The documentation site builds with ``mkdocs build --strict`` and holds what it promises.

Skipped when the ``docs`` extra (mkdocs, mkdocstrings-python, mkdocs-material) is not installed.
The build runs once per session into a temporary folder (about 5-15 s).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from docs_pending import expected_missing, module_file

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
REFERENCE = DOCS / "reference"

# Modules of src/relreps without an API reference page, and why.
INTERNAL = {
    "__main__": "runs the command line",
    "cli": "the command line, documented in docs/cli.md",
    "models": "the experiments' networks",
    "progress": "progress bars (RELREPS_QUIET=1 silences them)",
    "report": "the experiments' tables and figures",
}
# what a browser fetches by itself (links that a reader may follow are fine)
_REMOTE = r"""["']?(?:https?:)?//"""
EXTERNAL_ASSETS = re.compile(rf"""<(?:script|img|iframe|source|video|audio)\b[^>]*\ssrc={_REMOTE}"""
                             rf"""|<link\b[^>]*\shref={_REMOTE}|@import\s+(?:url\()?{_REMOTE}"""
                             rf"""|url\({_REMOTE}""")
MISSING_MARK = re.compile(r'class="relreps-missing-module" data-module="([\w.]+)"')


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    for module in ("mkdocs", "mkdocstrings_handlers.python", "material"):
        pytest.importorskip(module, reason="the documentation site needs the docs extra")
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")  # mkdocs-material's banner
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                             str(ROOT / "mkdocs.yml"), "--site-dir", str(out)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stderr[-8000:]}"
    return out


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _nav_pages() -> list[str]:
    yaml = pytest.importorskip("yaml", reason="reading mkdocs.yml needs PyYAML (docs extra)")

    def walk(node):
        if isinstance(node, str):
            yield node
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)
        elif isinstance(node, dict):
            for value in node.values():
                yield from walk(value)

    config = yaml.safe_load(_text(ROOT / "mkdocs.yml").replace("!!python/name:", ""))
    return list(walk(config["nav"]))


def _public_modules() -> list[str]:
    src = ROOT / "src" / "relreps"
    names = [p.stem for p in src.glob("*.py")] + [p.parent.name for p in src.glob("*/__init__.py")]
    return sorted(n for n in names if not n.startswith("_") and n not in INTERNAL)


@pytest.mark.slow
def test_the_main_pages_are_built(site):
    for page in ("index.html", "tutorial.html", "own-models.html", "cli.html", "concepts.html",
                 "metrics.html", "reference/index.html", "reference/projection.html",
                 "search/search_index.json", "objects.inv"):
        assert (site / page).is_file(), page
    home = _text(site / "index.html")
    assert "Relative representations" in home and 'href="tutorial.html"' in home


@pytest.mark.slow
def test_the_reference_is_generated_from_the_docstrings(site):
    projection = _text(site / "reference" / "projection.html")
    for name in ("relative_projection", "RelativeProjection"):
        assert f'id="relreps.projection.{name}"' in projection, name
    # a NumPy-style parameter table, and Sphinx roles turned into links
    assert "Parameters:" in projection and "<code>chunk_size</code>" in projection
    assert ":class:`" not in projection and ":mod:`" not in projection
    assert 'href="similarity.html#relreps.similarity.Similarity"' in projection
    top = _text(site / "reference" / "relreps.html")
    for name in ("relative_projection", "RelativeProjection", "LatentTranslator", "AnchorSet"):
        assert f"relreps.{name}</code>" in top, name


@pytest.mark.slow
def test_nothing_is_fetched_from_elsewhere(site):
    offenders = [p.relative_to(site).as_posix() for p in site.rglob("*")
                 if p.suffix in (".html", ".css", ".js") and EXTERNAL_ASSETS.search(_text(p))]
    assert not offenders, f"files that load fonts, scripts or styles from the network: {offenders}"


@pytest.mark.slow
def test_missing_parts_are_only_the_expected_ones(site):
    shown = {m for p in site.rglob("*.html") for m in MISSING_MARK.findall(_text(p))}
    unexpected = sorted(m for m in shown if not expected_missing(m))
    assert not unexpected, (f"the site shows {unexpected} as missing from this checkout: fix the "
                            "reference, or (parallel work) list it in tests/docs_pending.py")


def test_every_page_is_in_the_navigation():
    nav = set(_nav_pages())
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")
             if "_tooling" not in p.parts}
    assert pages - nav == set(), "pages missing from the nav of mkdocs.yml"
    assert nav - pages == set(), "nav entries without a page"


def test_every_public_module_has_a_reference_page():
    for module in _public_modules():
        page = REFERENCE / f"{module}.md"
        assert page.is_file(), f"relreps.{module} has no docs/reference/{module}.md"
        assert re.search(rf"^::: relreps\.{module}\s*$", _text(page), flags=re.M), page
        assert f"reference/{module}.md" in _nav_pages(), f"{page} is not in the nav"
        assert f"]({module}.md)" in _text(REFERENCE / "index.md"), f"{module} not in the index"
    for module in INTERNAL:
        assert module_file(f"relreps.{module}") is not None, f"INTERNAL lists {module}: stale"


def test_the_licence_and_the_typing_marker_ship():
    licence = _text(ROOT / "LICENSE")
    assert licence.startswith("MIT License") and "relreps contributors" in licence
    assert 'license = "MIT"' in _text(ROOT / "pyproject.toml")
    assert (ROOT / "src" / "relreps" / "py.typed").is_file()
