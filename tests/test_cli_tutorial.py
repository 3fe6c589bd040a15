"""docs/own-models.md runs as written (at a small size, with the hashing encoder standing in for
the sentence encoders so that the test takes seconds).

The shell blocks are run in order in a fresh folder; the Python blocks after them. Steps that
need ``relreps.StitchedClassifier`` run once it can be imported.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "own-models.md"
SMALL = {"minilm-l6": "hash:64", "minilm-l3": "hash:48", "N = 1000": "N = 150",
         "choice(N, 300": "choice(N, 40"}


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(), flags=re.S)


def _small(code: str) -> str:
    for a, b in SMALL.items():
        code = code.replace(a, b)
    return code


def _has_stitching() -> bool:
    try:
        from relreps import persistence  # noqa: F401
        from relreps.stitching import StitchedClassifier  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.slow
def test_tutorial_commands_run(tmp_path):
    try:
        from relreps.datasets.text import load_text_dataset

        load_text_dataset("trec")
    except Exception as e:  # noqa: BLE001 - the offline TREC data is an optional install
        pytest.skip(f"TREC data not installed ({e})")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), RELREPS_QUIET="1", PY=sys.executable)
    prelude = ('set -euo pipefail\nrelreps() { "$PY" -m relreps "$@"; }\n'
               'python() { "$PY" "$@"; }\n')
    stitching = _has_stitching()
    shell = _blocks("bash")
    assert len(shell) >= 4 and any("relreps compare" in b for b in shell)
    ran = 0
    for block in shell:
        if "relreps stitch" in block and not stitching:
            continue
        r = subprocess.run(["bash", "-c", prelude + _small(block)], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, (block, r.stdout[-2000:], r.stderr[-2000:])
        ran += 1
    assert (tmp_path / "runs" / "trec-l6-vs-l3" / "results.json").exists()
    if stitching:
        assert len((tmp_path / "predictions.txt").read_text().splitlines()) == 499
    for block in _blocks("python"):
        if "StitchedClassifier" in block and not stitching:
            continue
        r = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, (block, r.stderr[-2000:])
    assert (tmp_path / "runs" / "from-python" / "results.md").exists()
    assert ran == (len(shell) if stitching else 2)


def test_embed_help_lists_every_registered_text_encoder():
    import contextlib
    import io

    from relreps.cli import build_parser
    from relreps.encoders.text import TEXT_ENCODERS

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.suppress(SystemExit):
        build_parser().parse_args(["embed", "--help"])
    text = " ".join(buf.getvalue().split())
    assert all(name in text for name in TEXT_ENCODERS), text
