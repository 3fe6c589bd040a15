"""MkDocs hooks of the relreps site (declared in mkdocs.yml).

1. The table of top-level names on ``reference/relreps.md`` is generated from
   ``src/relreps/__init__.py`` (its lazily imported names and submodules), so it cannot go out of
   date.
2. ``::: relreps.X`` for a module that is not in this checkout is replaced by a visible notice
   (marked ``relreps-missing-module``) instead of failing the build. Modules are developed on
   parallel branches; ``tests/test_docs_site.py`` fails when a module is missing that is not
   expected to be, so the notice never hides a module that should be there.
"""

from __future__ import annotations

import ast
import logging
import re
from pathlib import Path
from typing import Any

_log = logging.getLogger("mkdocs.plugins.relreps.hooks")
DIRECTIVE = re.compile(r"^::: (relreps(?:\.\w+)*)[ \t]*\n((?:[ \t]+\S.*\n?)*)", re.M)
TOPLEVEL_MARK = "<!-- relreps: top-level names -->"
ROLE = re.compile(r":(?:py:)?(?:mod|func|class|meth|attr|data|exc|obj|const):`~?([^`]+?)`")

_src: Path | None = None


def on_config(config: Any, **kwargs: Any) -> Any:
    global _src
    _src = Path(config["config_file_path"]).resolve().parent / "src"
    return config


def _module_file(module: str) -> Path | None:
    base = _src.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _missing(match: re.Match[str]) -> str:
    module = match.group(1)
    if _module_file(module) is not None:
        return match.group(0)
    _log.info("relreps docs: %s is not in this checkout; its reference is a notice", module)
    return (f'!!! warning "Not in this build"\n'
            f"    The module `{module}` is not part of this checkout of relreps, so its "
            f"reference could not be generated.\n"
            f'    <span class="relreps-missing-module" data-module="{module}"></span>\n\n')


def _definitions(path: Path) -> dict[str, str]:
    """Top-level functions and classes of a module file -> the first line of their docstring."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            summary = (ast.get_docstring(node) or "").split("\n\n")[0].replace("\n", " ")
            out[node.name] = ROLE.sub(lambda m: f"`{m.group(1)}`", summary).replace("|", "\\|")
    return out


def _literal(tree: ast.Module, name: str) -> Any:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name
                                                for t in node.targets):
            return ast.literal_eval(node.value)
    raise LookupError(f"src/relreps/__init__.py has no literal {name}")


def _toplevel_table() -> str:
    tree = ast.parse((_src / "relreps" / "__init__.py").read_text(encoding="utf-8"))
    lazy: dict[str, str] = _literal(tree, "_LAZY")
    submodules: tuple[str, ...] = _literal(tree, "_SUBMODULES")
    eager = [(alias.name, node.module) for node in tree.body
             if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("relreps.")
             for alias in node.names]
    rows = ["| name | defined in | what it is |", "|---|---|---|"]
    for name, module in [*lazy.items(), *eager]:
        path = _module_file(module)
        defs = _definitions(path) if path else {}
        if name in defs:
            rows.append(f"| [`relreps.{name}`][{module}.{name}] | `{module}` | {defs[name]} |")
        else:
            _log.info("relreps docs: %s.%s is not in this checkout", module, name)
            rows.append(f"| `relreps.{name}` | `{module}` | not in this build "
                        f'<span class="relreps-missing-module" data-module="{module}.{name}">'
                        "</span> |")
    pages = Path(_src.parent, "docs", "reference")
    rows += ["", "Submodules (imported on first use):", ""]
    for sub in submodules:
        page = pages / f"{sub}.md"
        rows.append(f"- [`relreps.{sub}`]({sub}.md)" if page.is_file() else f"- `relreps.{sub}`")
    return "\n".join(rows) + "\n"


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    if TOPLEVEL_MARK in markdown:
        markdown = markdown.replace(TOPLEVEL_MARK, _toplevel_table())
    return DIRECTIVE.sub(_missing, markdown)
