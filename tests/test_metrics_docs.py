"""docs/metrics.md: its code runs, and its statements about names and limits match the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from relreps import metrics as M

pytestmark = pytest.mark.usefixtures("one_thread")

DOC = Path(__file__).resolve().parents[1] / "docs" / "metrics.md"


def test_the_examples_run_in_order():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 3
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)  # noqa: S102 - our own documentation
    assert namespace["result"].matrix.shape == (5, 3)
    assert 0 < namespace["acc"].compute() <= 1


def test_documented_names_and_limits_exist():
    text = DOC.read_text()
    for name in ("mean_cosine", "cka", "CKAAccumulator", "svcca", "pwcca",
                 "procrustes_distance", "rsa", "compare_layers", "LayerComparison",
                 "CCAWarning"):
        assert f"`{name}" in text and hasattr(M, name), name
    assert f"{M.RSA_MAX_SAMPLES:,}" in text and f"{M.RBF_MAX_SAMPLES:,}" in text
    assert M._EXACT_MAX_ELEMENTS == 2**27 and "2^27" in text
