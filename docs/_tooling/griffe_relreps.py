"""Griffe extension of the relreps site: relreps' docstrings as NumPy-style sections and links.

Two habits of relreps' docstrings would render badly in the API reference; this extension adapts
them when the package is loaded, without touching the source:

1. Parameter and attribute lists often read ``name : what it is, in prose`` (prose where NumPy
   style puts a type), sometimes wrapped onto indented lines, and free paragraphs sometimes follow
   the list. An entry keeps its type only when it is short and followed by an indented
   description that starts a sentence (``x : (n, d) array or tensor`` then ``Samples, ...``);
   otherwise the whole text becomes the description (the type shown is then the signature's
   annotation). ``name : description`` lines that name the signature's parameters, in a
   docstring without a "Parameters" header, become that section. Unindented wrapped lines
   continue their entry; a paragraph that follows a
   parameter list becomes a "Notes" section; prose under "Returns" becomes the description of
   the returned value; ``SomeError : when`` under "Raises" becomes the exception and its
   description. Plain-text maths stays literal (``|<h_i, z_j>|``, ``||A^T B||_*``, ``2**127``
   are not read as HTML or emphasis), and reST's ``text::`` before a literal block reads
   ``text:``.
2. An object that a package re-exports (``relreps.encoders.CachedEncoder``, defined in
   ``relreps.encoders.base``) is documented once, where users import it from: the package
   (except the top-level names of ``relreps``, documented in their modules).
3. Sphinx cross-reference roles (``:func:`relative_projection```,
   ``:class:`~relreps.centering.AnisotropyWarning```) are resolved as Sphinx resolves them (the
   name as written, then relative to the enclosing class, module and packages) and become links
   to where the site documents the object, or plain code where it does not (a private helper, a
   module without a reference page). A role naming nothing that exists is a documentation bug,
   logged as a warning (a failure under ``mkdocs build --strict``), unless it lies in a
   ``relreps`` module that is not in this checkout, or a module declares it in its ``_LAZY``
   table of names imported on first use but does not define it yet (logged as information, and
   marked in the page with ``relreps-missing-module``, which ``tests/test_docs_site.py`` checks
   against the features expected on other branches). Names in ``_LAZY`` tables resolve to where
   they are defined (``relreps.StitchedClassifier`` -> ``relreps.stitching.StitchedClassifier``).
"""

from __future__ import annotations

import ast
import html
import logging
import re
from pathlib import Path
from typing import Any

from griffe import Alias, Extension, Object

PACKAGE = "relreps"
ROLE = re.compile(r":(?:py:)?(mod|func|class|meth|attr|data|exc|obj|const):`(~?)([^`]+?)`")
CALLABLE_ROLES = {"func", "meth"}
ENTRY_SECTIONS = {"parameters", "other parameters", "attributes"}
VALUE_SECTIONS = {"returns", "yields"}
RAISES_SECTIONS = {"raises", "warns"}
EXCEPTION_ENTRY = re.compile(r"^(?P<names>[A-Za-z_][\w.]*(?:,\s*[A-Za-z_][\w.]*)*)"
                             r"\s+:\s*(?P<rest>.+)$")
ENTRY = re.compile(r"^(?P<names>\*{0,2}[A-Za-z_]\w*(?:,\s*\*{0,2}[A-Za-z_]\w*)*)"
                   r"(?:\s+:(?:\s+(?P<rest>.*)|\s*))?$")
TYPE_MAX_CHARS = 48
CODE_SPAN = re.compile(r"(``.+?``|`[^`]+`)")

_log = logging.getLogger("mkdocs.plugins.relreps.docstrings")


def _dash(line: str) -> bool:
    return bool(line.strip()) and not line.strip().strip("-")


def _header(lines: list[str], i: int) -> bool:
    return (bool(lines[i].strip()) and not lines[i].startswith(" ") and i + 1 < len(lines)
            and _dash(lines[i + 1]))


def _plain_type(text: str) -> str:
    """A type as plain text: types are shown as code, not as Markdown (no roles, no ``)."""
    text = ROLE.sub(lambda m: m.group(3).rsplit(".", 1)[-1] if m.group(2) else m.group(3), text)
    return text.replace("``", "")


def _escape_prose(line: str) -> str:
    """Keep plain-text maths and placeholders literal: ``<h_i, z_j>``, ``||A||_*``, ``2**127``."""
    parts = CODE_SPAN.split(line)
    for k in range(0, len(parts), 2):  # even parts are outside code spans
        part = re.sub(r"<(?=[A-Za-z/!?])", "&lt;", parts[k])
        part = re.sub(r"(?<=[|)\]}])_", r"\\_", part.replace("_*", "_\\*"))
        parts[k] = re.sub(r"(?<=\d)\*\*(?=\d)", r"\\*\\*", part)
    return "".join(parts)


def escape(text: str) -> str:
    """`text` with :func:`_escape_prose` applied outside code blocks and doctest lines."""
    out, in_code = [], False
    for line in text.split("\n"):
        stripped = line.lstrip()
        if stripped.startswith("```"):
            in_code = not in_code
        code = in_code or stripped.startswith((">>>", "... ")) or stripped.startswith("```")
        if not code and line.endswith("::") and not line.endswith(" ::"):
            line = line[:-1]  # reST's "text::" introduces a literal block: "text:"
        out.append(line if code else _escape_prose(line))
    return "\n".join(out)


def _is_type(rest: str, continuation: list[str]) -> bool:
    first = next((c for c in continuation if c.strip()), "")
    return (bool(first) and len(rest) <= TYPE_MAX_CHARS
            and not rest.endswith((".", ";", ",", ":", "("))
            and (first[0].isupper() or first.startswith("``")))


def _items(body: list[str]) -> tuple[list[list[str]], list[str]]:
    """Split a section body into entries (first line + indented lines) and trailing prose.

    An unindented line that cannot start an entry continues the entry before it (text wrapped
    without indentation); after a blank line it starts the trailing prose.
    """
    items: list[list[str]] = []
    for k, line in enumerate(body):
        if not line.strip() or line.startswith(" "):
            if items:
                items[-1].append(line)
            continue
        entry = ENTRY.match(line)
        if items and not entry:
            if not body[k - 1].strip():
                return items, body[k:]
            items[-1].append("    " + line)
            continue
        items.append([line])
    return items, []


def _entry_section(body: list[str]) -> list[str]:
    items, prose = _items(body)
    out: list[str] = []
    for first, *rest_lines in items:
        m = ENTRY.match(first)
        rest = (m.group("rest") or "").strip() if m else ""
        if m and rest and not _is_type(rest, [c[4:] for c in rest_lines]):
            out += [m.group("names"), "    " + rest, *rest_lines]
        elif m and rest:
            out += [f"{m.group('names')} : {_plain_type(rest)}", *rest_lines]
        else:
            out += [first, *rest_lines]
    if prose:
        while out and not out[-1].strip():
            out.pop()
        out += ["", "Notes", "-----", *prose]
    return out


def _value_section(body: list[str]) -> list[str]:
    """Returns/Yields: a paragraph of prose becomes the description of one unnamed value;
    ``name : prose`` becomes a named value with that description."""
    first = next((line for line in body if line.strip()), "")
    if len(first) > TYPE_MAX_CHARS and not ENTRY.match(first):
        return [":", *("    " + line if line.strip() else "" for line in body)]
    items, prose = _items(body)
    out: list[str] = []
    for first_line, *rest_lines in items:
        m = ENTRY.match(first_line)
        rest = (m.group("rest") or "").strip() if m else ""
        if m and rest and not _is_type(rest, [c[4:] for c in rest_lines]):
            out += [f"{m.group('names')} :", "    " + rest, *rest_lines]
        else:
            out += [first_line, *rest_lines]
    return out + prose


def _raises_section(body: list[str]) -> list[str]:
    """``SomeError : when`` (a NumPy type line with prose) -> ``SomeError`` + description."""
    out: list[str] = []
    for line in body:
        m = EXCEPTION_ENTRY.match(line)
        out += [m.group("names"), "    " + m.group("rest")] if m else [line]
    return out


def _implicit_parameters(lines: list[str], params: set[str]) -> list[str]:
    """A paragraph of ``name : description`` lines naming the signature's parameters, in a
    docstring without a Parameters section, becomes one."""
    if not params or any(line.strip().lower() == "parameters" for line in lines):
        return lines
    for k, line in enumerate(lines):
        m = ENTRY.match(line)
        if (k > 0 and not lines[k - 1].strip() and m and m.group("rest") is not None
                and {n.strip().lstrip("*") for n in m.group("names").split(",")} <= params):
            return [*lines[:k], "Parameters", "----------", *lines[k:]]
    return lines


def normalize(text: str, params: set[str] | frozenset[str] = frozenset()) -> str:
    """The docstring `text` with its sections rewritten as described in the module docstring;
    `params` are the names of the documented callable's parameters."""
    lines = _implicit_parameters(text.split("\n"), set(params))
    out: list[str] = []
    i = 0
    in_code = False
    while i < len(lines):
        if lines[i].lstrip().startswith("```"):
            in_code = not in_code
        # "Attributes (after `fit`)": a known section with a remark NumPy style has no room for
        title = re.sub(r"\s*\(.*\)$", "", lines[i].strip()).lower()
        if in_code or not _header(lines, i) or title not in SECTION_FIXES:
            out.append(lines[i])
            i += 1
            continue
        j = i + 2
        while j < len(lines) and not _header(lines, j):
            j += 1
        body = lines[i + 2:j]
        out += [title.capitalize(), "-" * len(title), *SECTION_FIXES[title](body)]
        i = j
    return "\n".join(out)


SECTION_FIXES = {**dict.fromkeys(ENTRY_SECTIONS, _entry_section),
                 **dict.fromkeys(VALUE_SECTIONS, _value_section),
                 **dict.fromkeys(RAISES_SECTIONS, _raises_section)}


def _parameter_names(obj: Any) -> set[str]:
    """Parameters of a function, or of a class's ``__init__`` (self excluded)."""
    target = obj
    if getattr(obj, "is_class", False):
        target = obj.members.get("__init__")
    if target is None or isinstance(target, Alias) or not getattr(target, "is_function", False):
        return set()
    return {p.name for p in target.parameters if p.name not in ("self", "cls")}


def _lookup(collection: Any, path: str) -> Any | None:
    try:
        return collection[path]
    except Exception:  # noqa: BLE001 - not found, or an alias that cannot be resolved
        return None


def _canonical(found: Any) -> str:
    if isinstance(found, Alias):
        try:
            return found.final_target.path
        except Exception:  # noqa: BLE001 - external or cyclic alias: keep the alias's path
            return found.path
    return found.path


class RelrepsDocstrings(Extension):
    """Normalise the sections and resolve the roles of every docstring of ``relreps``."""

    def __init__(self) -> None:
        super().__init__()
        self.src: Path | None = None
        self.public_path: dict[str, str] = {}  # defining path -> the re-exporting package's
        self.lazy: dict[str, str] = {}  # names a module imports on first use (its _LAZY)

    def on_package(self, *, pkg: Any, loader: Any, **kwargs: Any) -> None:
        if pkg.path != PACKAGE:
            return
        self.src = Path(pkg.filepath).parent.parent
        for member in pkg.members.values():  # the top level's names are documented in place
            if not isinstance(member, Alias) and member.is_module:
                self._document_reexports_once(member)
        self._collect_lazy(pkg)
        self._rewrite(pkg, loader.modules_collection)

    def _collect_lazy(self, module: Any) -> None:
        """``_LAZY = {name: module}`` (PEP 562 lazy imports) -> resolvable cross-references."""
        table = module.members.get("_LAZY")
        if table is not None and not isinstance(table, Alias) and table.value is not None:
            try:
                lazy = ast.literal_eval(str(table.value))
            except (ValueError, SyntaxError):
                lazy = {}
            for name, where in lazy.items():
                self.lazy[f"{module.path}.{name}"] = f"{where}.{name}"
        for member in module.members.values():
            if not isinstance(member, Alias) and member.is_module:
                self._collect_lazy(member)

    def _document_reexports_once(self, module: Any) -> None:
        for name in [str(e) for e in module.exports or ()]:
            alias = module.members.get(name)
            if not isinstance(alias, Alias) or not alias.target_path.startswith(module.path + "."):
                continue
            try:
                target = alias.final_target
            except Exception:  # noqa: BLE001 - unresolvable: leave it to mkdocstrings
                continue
            alias.public = True
            target.public = False
            self.public_path[target.path] = alias.path
        for member in module.members.values():
            if not isinstance(member, Alias) and member.is_module:
                self._document_reexports_once(member)

    def _rewrite(self, obj: Object, collection: Any) -> None:
        if obj.docstring is not None:
            text = escape(normalize(obj.docstring.value, _parameter_names(obj)))
            obj.docstring.value = ROLE.sub(lambda m: self._link(obj, m, collection), text)
        for member in list(obj.members.values()):
            if not isinstance(member, Alias) and member.parent is obj:
                self._rewrite(member, collection)

    def _absent_module(self, target: str) -> str | None:
        """The missing relreps module `target` lies in, if any (developed on another branch)."""
        parts = target.split(".")
        if parts[0] != PACKAGE or self.src is None:
            return None
        for n in range(2, len(parts) + 1):
            base = self.src.joinpath(*parts[:n])
            if not (base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()):
                return ".".join(parts[:n])
        return None

    def _link(self, obj: Object, match: re.Match[str], collection: Any) -> str:
        role, short, target = match.group(1), match.group(2) == "~", match.group(3).strip()
        target = target.removesuffix("()")
        shown = target.rsplit(".", 1)[-1] if short else target
        if role in CALLABLE_ROLES:
            shown += "()"
        candidates = [target]
        scope: Any = obj
        while scope is not None:
            candidates.append(f"{scope.path}.{target}")
            scope = scope.parent
        candidates += [self.lazy[c] for c in candidates if c in self.lazy]
        for path in dict.fromkeys(candidates):
            found = _lookup(collection, path)
            if found is not None:
                canonical = _canonical(found)
                ident = html.escape(self.public_path.get(canonical, canonical), quote=True)
                return (f'<autoref identifier="{ident}" optional>'
                        f"<code>{html.escape(shown)}</code></autoref>")
        where = obj.filepath[0] if isinstance(obj.filepath, list) else obj.filepath
        declared = next((self.lazy[c] for c in candidates if c in self.lazy), None)
        absent = declared or self._absent_module(target)
        if absent is not None:
            _log.info("%s: %s refers to %s, in %s, not in this checkout", where, obj.path,
                      match.group(0), absent)
            return (f'<code>{html.escape(shown)}</code><span class="relreps-missing-module" '
                    f'data-module="{absent}"></span>')
        _log.warning("%s:%s: docstring of %s refers to %s, which does not exist", where,
                     obj.lineno or 0, obj.path, match.group(0))
        return f"`{shown}`"
