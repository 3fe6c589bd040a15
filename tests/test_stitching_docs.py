"""The code of docs/stitching.md runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "stitching.md"
pytestmark = pytest.mark.usefixtures("one_thread")


def test_stitching_doc_code_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 4
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)  # noqa: S102 - our own docs
    out = capsys.readouterr().out.split("\n")
    native, zero_shot = float(out[0]), float(out[1])
    assert native > 0.7 and zero_shot == pytest.approx(native, abs=0.02)
    assert float(out[2]) > 0.9  # texts classified through another encoder
    assert "head fit on" in "\n".join(out)
