"""Parts of relreps that the documentation uses but that are still developed on other branches.

The documentation is written against the agreed interfaces while they are being built in
parallel. Until a part below exists in this checkout:

- ``tests/test_docs.py`` runs a page's code blocks up to the first block that uses it, and skips
  the rest of the page, naming the part;
- ``tests/test_docs_site.py`` accepts the notice that the site shows in its place (the
  ``relreps-missing-module`` markers written by ``docs/_tooling``).

Once a part exists, ``test_pending_parts_are_still_missing`` fails until its entry is deleted
here: a part that exists must be exercised by the documentation, so that a later regression
fails instead of being skipped. When every branch is merged this dictionary is empty.
"""

from __future__ import annotations

import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# dotted name of a module or of a module-level object -> regex of the documentation code using it
PENDING: dict[str, str] = {}


def module_file(module: str) -> Path | None:
    """The source file of `module` (``relreps.x.y``) in this checkout, if any."""
    base = SRC.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def exists(dotted: str) -> bool:
    """Whether the module, or the module-level function, class or constant, `dotted` exists.

    Read from the source (nothing is imported), so it is cheap and has no side effects.
    """
    if module_file(dotted) is not None:
        return True
    module, _, name = dotted.rpartition(".")
    path = module_file(module) if module else None
    if path is None:
        return False
    pattern = rf"^(?:(?:async\s+)?def|class)\s+{re.escape(name)}\b|^{re.escape(name)}\s*[:=]"
    return re.search(pattern, path.read_text(encoding="utf-8"), flags=re.M) is not None


def missing() -> dict[str, str]:
    """The pending parts that this checkout lacks -> the regex of the code that needs them."""
    return {name: pattern for name, pattern in PENDING.items() if not exists(name)}


def expected_missing(dotted: str) -> bool:
    """Whether the site may show `dotted` as missing: it is, or contains, a missing pending part.
    """
    return any(p == dotted or p.startswith(dotted + ".") or dotted.startswith(p + ".")
               for p in missing())
