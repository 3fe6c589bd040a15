"""The documentation's code runs as written, and its invariance table matches the registry.

How documentation code is checked (README.md and every page under docs/):

- Every ```` ```python ```` and ```` ```bash ```` block is executed, in page order, in one fresh
  Python process per page whose working directory is an empty temporary folder: a page reads as
  one session, later blocks use what earlier blocks defined or wrote. In ``bash`` blocks,
  ``relreps`` is this checkout's command line and ``python`` the interpreter running the tests;
  each runs under ``set -euo pipefail``. ``RELREPS_CACHE`` is a fresh folder, ``MPLBACKEND`` is
  ``Agg`` and BLAS/torch use one thread.
- A block is shown but not executed when the line just before its fence is
  ``<!-- docs: no-run: REASON -->`` (an HTML comment, invisible on GitHub and on the site). The
  reason is required: "full-scale run, about 20 minutes", "needs a GPU cluster", ...
- A ```` ```text ```` block preceded by ``<!-- docs: output -->`` shows what the code block just
  before it prints, and is checked: the same lines, the same words, and the same numbers (an
  integer exactly, a decimal within :data:`OUTPUT_TOLERANCE`, so that library versions may move
  the last digit but not the result).
- Any other fence (```` ```text ````, ```` ```console ````, ```` ```json ````, a fence with no
  language) is never executed: use it for syntax summaries and output.
- A page whose code a dedicated test runs (asserting on its output, or at a smaller size) is
  listed in :data:`DEDICATED`; pages not yet written to this convention in :data:`UNCONVERTED`
  (skipped, with the reason).
- Code that needs a part of relreps still developed on another branch (``tests/docs_pending.py``)
  runs up to the first block that needs it; the rest of the page is skipped, naming the part.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from docs_pending import missing
from relreps import similarity

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "similarities.md"

RUN_LANGUAGES = ("python", "bash")
NO_RUN = re.compile(r"^<!--\s*docs:\s*no-run\s*:\s*(?P<reason>.*?)\s*-->\s*$")
OUTPUT = re.compile(r"^<!--\s*docs:\s*output\s*-->\s*$")
MARKER = re.compile(r"^<!--\s*docs:")
NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")
OUTPUT_TOLERANCE = 0.05  # absolute, for numbers written with a decimal point
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`\n]*)$")
PAGE_TIMEOUT_S = 900

# page -> the test that runs its code (with assertions on the output, or at a smaller size)
DEDICATED = {
    "docs/metrics.md": "tests/test_metrics_docs.py",
    "docs/own-models.md": "tests/test_cli_tutorial.py",
    "docs/concepts.md": "tests/test_projection_docs.py",
    "docs/similarities.md": "tests/test_projection_docs.py",
    "docs/stitching.md": "tests/test_stitching_docs.py",
    "docs/translation.md": "tests/test_translation_docs.py",
}

# page -> why its code is not run yet (each names who must mark or fix its blocks)
_SNIPPETS = "its Python blocks are snippets with undefined names"
_FULL_RUNS = "its bash blocks are full-scale runs (minutes to hours)"
UNCONVERTED = {
    "docs/text.md": f"{_SNIPPETS}; {_FULL_RUNS} (owner: exp)",
    "docs/images.md": f"{_FULL_RUNS} (owner: exp)",
    "docs/beyond-the-paper.md": f"{_SNIPPETS}; {_FULL_RUNS} (owners: exp, torch)",
}


@dataclass(frozen=True)
class Block:
    """One fenced code block of a Markdown page."""

    page: str
    line: int  # 1-based line of the first line of code
    lang: str
    code: str
    no_run: str | None  # the reason given by a no-run marker
    is_output: bool = False  # a block marked as the output of the code block before it
    expect: str | None = None  # for a code block: its output, as shown by the next block

    @property
    def runs(self) -> bool:
        return self.lang in RUN_LANGUAGES and self.no_run is None

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of `path` (CommonMark fences: ``` or ~~~, closed by a longer or
    equal fence of the same character), with the no-run marker preceding each, if any."""
    page = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.name
    lines = path.read_text(encoding="utf-8").splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, indent = m.group("fence"), len(m.group("indent"))
        lang = (m.group("info").strip().split() or [""])[0].lower().lstrip(".{")
        j = i + 1
        while j < len(lines):
            close = FENCE.match(lines[j])
            if (close and close.group("fence")[0] == fence[0] and not close.group("info").strip()
                    and len(close.group("fence")) >= len(fence)):
                break
            j += 1
        code = textwrap.dedent("\n".join(x[indent:] if x[:indent].isspace() else x
                                         for x in lines[i + 1:j]))
        before = lines[i - 1].strip() if i else ""
        marker = NO_RUN.match(before)
        block = Block(page, i + 2, lang, code + "\n", marker.group("reason") if marker else None,
                      is_output=bool(OUTPUT.match(before)))
        if block.is_output and out and out[-1].runs:
            out[-1] = replace(out[-1], expect=block.code)
        out.append(block)
        i = j + 1
    return out


def _words_and_numbers(line: str) -> tuple[list[str], list[str]]:
    return " ".join(NUMBER.sub(" # ", line).split()).split(), NUMBER.findall(line)


def output_differences(actual: str, expected: str) -> list[str]:
    """Lines where `actual` differs from `expected` (words exactly, numbers as documented)."""
    got = [x.rstrip() for x in actual.strip("\n").splitlines()]
    want = [x.rstrip() for x in expected.strip("\n").splitlines()]
    if len(got) != len(want):
        return [f"{len(got)} line(s) printed, {len(want)} shown: {got!r}"]
    problems = []
    for g, w in zip(got, want):
        (g_words, g_nums), (w_words, w_nums) = _words_and_numbers(g), _words_and_numbers(w)
        close = len(g_nums) == len(w_nums) and all(
            abs(float(x) - float(e)) <= OUTPUT_TOLERANCE if any(c in e for c in ".eE") else x == e
            for x, e in zip(g_nums, w_nums))
        if g_words != w_words or not close:
            problems.append(f"printed {g!r}, shown {w!r}")
    return problems


def pages() -> list[Path]:
    docs = sorted(p for p in (ROOT / "docs").rglob("*.md") if "_tooling" not in p.parts)
    return [ROOT / "README.md", *docs]


def _page_id(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


DRIVER = r'''
import io, json, subprocess, sys, time, traceback

class Tee(io.TextIOBase):
    def __init__(self, out):
        self.out, self.seen = out, []
    def write(self, text):
        self.seen.append(text)
        return self.out.write(text)
    def flush(self):
        self.out.flush()

blocks = json.load(open(sys.argv[1], encoding="utf-8"))
printed = {}
namespace = {"__name__": "__main__"}
for b in blocks:
    where = f"{b['page']}:{b['line']}"
    print(f"----- {where} ({b['lang']})", flush=True)
    start = time.perf_counter()
    if b["lang"] == "python":
        code = "\n" * (b["line"] - 1) + b["code"]  # tracebacks show the page's line numbers
        sys.stdout = tee = Tee(sys.__stdout__)
        try:
            exec(compile(code, b["page"], "exec"), namespace)
        except BaseException:
            sys.stdout = sys.__stdout__
            traceback.print_exc()
            print(f"FAILED: the python block at {where}", flush=True)
            sys.exit(1)
        finally:
            sys.stdout = sys.__stdout__
        printed[b["line"]] = "".join(tee.seen)
    else:
        sys.stdout.flush()
        run = subprocess.run(["bash", "-c", "set -euo pipefail\n" + b["code"]],
                             stdout=subprocess.PIPE, text=True)
        sys.stdout.write(run.stdout)
        printed[b["line"]] = run.stdout
        if run.returncode:
            print(f"FAILED: the bash block at {where} exited with {run.returncode}")
            sys.exit(1)
    print(f"----- {where}: {time.perf_counter() - start:.1f} s", flush=True)
    json.dump(printed, open(sys.argv[2], "w", encoding="utf-8"))
'''


def run_blocks(code_blocks: list[Block], folder: Path) -> subprocess.CompletedProcess[str]:
    """Run `code_blocks` in order, in one fresh process working in `folder` (see the module
    docstring for the environment). What each block printed is in ``result.printed``
    (first line of code -> text), and differences from the documented outputs in
    ``result.output_problems``."""
    work, bin_dir = folder / "work", folder / "bin"
    work.mkdir(parents=True)
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").symlink_to(sys.executable)
    relreps_cmd = bin_dir / "relreps"
    relreps_cmd.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m relreps "$@"\n')
    relreps_cmd.chmod(0o755)
    spec = folder / "blocks.json"
    spec.write_text(json.dumps([{"page": b.page, "line": b.line, "lang": b.lang, "code": b.code}
                                for b in code_blocks]))
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
               PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
               RELREPS_CACHE=str(folder / "cache"), RELREPS_QUIET="1", MPLBACKEND="Agg",
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               PYTHONHASHSEED="0")
    printed_file = folder / "printed.json"
    result = subprocess.run([sys.executable, "-c", DRIVER, str(spec), str(printed_file)],
                            cwd=work, env=env, capture_output=True, text=True,
                            timeout=PAGE_TIMEOUT_S)
    printed = {int(k): v for k, v in json.loads(printed_file.read_text()).items()} \
        if printed_file.is_file() else {}
    result.printed = printed  # type: ignore[attr-defined]
    result.output_problems = [  # type: ignore[attr-defined]
        f"{b.where}: {p}" for b in code_blocks if b.expect is not None and b.line in printed
        for p in output_differences(printed[b.line], b.expect)]
    return result


# ------------------------------------------------------------------------------ the pages run


@pytest.mark.slow
@pytest.mark.parametrize("path", pages(), ids=_page_id)
def test_page_code_runs(path, tmp_path):
    page = _page_id(path)
    if page in DEDICATED:
        test = ROOT / DEDICATED[page]
        if not test.is_file():
            pytest.skip(f"{page}: its code is run by {DEDICATED[page]}, not in this checkout")
        assert Path(page).name in test.read_text(encoding="utf-8"), \
            f"{DEDICATED[page]} does not mention {page}: update DEDICATED in {__file__}"
        return
    if page in UNCONVERTED:
        pytest.skip(f"{page} is not yet written to run: {UNCONVERTED[page]}")
    runnable = [b for b in blocks(path) if b.runs]
    needs = missing()
    stop = next(((i, [n for n, pat in needs.items() if re.search(pat, b.code)])
                 for i, b in enumerate(runnable)
                 if any(re.search(pat, b.code) for pat in needs.values())), None)
    to_run = runnable if stop is None else runnable[:stop[0]]
    if to_run:
        result = run_blocks(to_run, tmp_path)
        output = (result.stdout + result.stderr)[-6000:]
        assert result.returncode == 0, f"documentation code failed in {page}:\n{output}"
        assert not result.output_problems, (f"{page} shows outputs that its code does not print:\n"
                                            + "\n".join(result.output_problems))
    if stop is not None:
        pytest.skip(f"blocks from {runnable[stop[0]].where} on need {', '.join(stop[1])}, "
                    "not in this checkout (tests/docs_pending.py)")


def test_pending_parts_are_still_missing():
    from docs_pending import PENDING

    present = sorted(set(PENDING) - set(missing()))
    assert not present, (f"{', '.join(present)} now exist(s): delete them from PENDING in "
                         "tests/docs_pending.py, so that the documentation using them runs")


# ----------------------------------------------------------------- the convention is followed


def test_markers_are_well_formed_and_placed():
    problems = []
    for path in pages():
        lines = path.read_text(encoding="utf-8").splitlines()
        for k, line in enumerate(lines):
            if not MARKER.match(line.strip()):
                continue
            where = f"{_page_id(path)}:{k + 1}"
            m = NO_RUN.match(line.strip())
            if m is None and not OUTPUT.match(line.strip()):
                problems.append(f"{where}: unknown marker (use <!-- docs: no-run: REASON --> "
                                "or <!-- docs: output -->)")
            elif m is not None and not m.group("reason"):
                problems.append(f"{where}: a no-run marker needs a reason")
            elif k + 1 >= len(lines) or not FENCE.match(lines[k + 1]):
                problems.append(f"{where}: a marker must be just before a code fence")
        code = blocks(path)
        for before, block in zip([None, *code], code):
            if block.is_output and (before is None or not before.runs or block.lang != "text"):
                problems.append(f"{block.where}: an output block must be a ```text block just "
                                "after a code block that runs")
    assert not problems, "\n".join(problems)


def test_the_listed_pages_exist():
    listed = {*DEDICATED, *UNCONVERTED}
    stale = sorted(p for p in listed if not (ROOT / p).is_file())
    assert not stale, f"listed in {__file__} but absent: {stale}"


def test_block_parser(tmp_path):
    page = tmp_path / "page.md"
    text = ("# t\n\n```python\nx = 1\n```\n\n<!-- docs: no-run: slow -->\n```bash\nmake all\n```"
            "\n\n````text\n```python\nnot a block\n```\n````\n\n- item\n\n    ```python\n"
            "    y = 2\n    ```\n\n~~~python\nz = 3\n~~~\n\n```python title=\"a.py\"\nw = 4\n```\n")
    page.write_text(text, encoding="utf-8")
    found = blocks(page)
    assert [(b.lang, b.line, b.code, b.no_run, b.runs) for b in found] == [
        ("python", 4, "x = 1\n", None, True),
        ("bash", 9, "make all\n", "slow", False),
        ("text", 13, "```python\nnot a block\n```\n", None, False),
        ("python", 21, "y = 2\n", None, True),
        ("python", 25, "z = 3\n", None, True),
        ("python", 29, "w = 4\n", None, True),
    ]


def test_a_failing_block_fails_with_its_page_line(tmp_path):
    ok = Block("docs/x.md", 3, "python", "import relreps\nvalue = 41\n", None)
    bad = Block("docs/x.md", 9, "python", "value += 1\nassert value == 41, 'wrong'\n", None)
    shell = Block("docs/x.md", 14, "bash", "relreps --version\npython -c 'print(1 + 1)'\n", None)
    good = run_blocks([ok, shell], tmp_path / "a")
    assert good.returncode == 0 and "2" in good.stdout and "relreps" in good.stdout, good.stderr
    failed = run_blocks([ok, bad], tmp_path / "b")
    assert failed.returncode == 1
    assert "FAILED: the python block at docs/x.md:9" in failed.stdout
    assert 'File "docs/x.md", line 10' in failed.stderr  # the page's own line number
    false = run_blocks([Block("docs/x.md", 5, "bash", "false\necho unreachable\n", None)],
                       tmp_path / "c")
    assert false.returncode == 1 and "unreachable" not in false.stdout


def test_documented_outputs_are_compared(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("```python\nprint(f'mrr {2 / 3:.2f} of', 899)\n```\n\n<!-- docs: output -->\n"
                    "```text\nmrr 0.70 of 899\n```\n\n```bash\necho 'n = 3'\n```\n\n"
                    "<!-- docs: output -->\n```text\nn = 4\n```\n", encoding="utf-8")
    code = [b for b in blocks(page) if b.runs]
    assert [b.expect for b in code] == ["mrr 0.70 of 899\n", "n = 4\n"]
    result = run_blocks(code, tmp_path / "run")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.printed == {2: "mrr 0.67 of 899\n", 11: "n = 3\n"}
    assert result.output_problems == ["page.md:11: printed 'n = 3', shown 'n = 4'"]


def test_output_comparison():
    assert output_differences("a 0.91\nb (899, 48)\n", "a 0.93\nb (899, 48)") == []
    assert output_differences("a 0.81", "a 0.93")  # beyond the tolerance
    assert output_differences("b (899, 48)", "b (900, 48)")  # integers are exact
    assert output_differences("relative: 0.85", "absolute: 0.85")  # words are exact
    assert output_differences("x 1.0", "x 1.0\ny 2.0")  # line counts
    assert output_differences("x 1e-3", "x 0.001") == []
    assert output_differences("True", "False")


# ------------------------------------------------------------------------------- similarities


def test_invariance_table_matches_registry():
    rows = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0].startswith("`") and len(cells) == len(similarity.INVARIANCES) + 2:
            rows[cells[0].strip("`")] = {inv for inv, mark in zip(similarity.INVARIANCES,
                                                                  cells[1:-1]) if mark == "yes"}
    assert set(rows) == set(similarity.available())
    for name, declared in rows.items():
        assert declared == set(similarity.get(name).invariances), name
