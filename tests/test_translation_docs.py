"""docs/translation.md: its example runs as written and shows what it claims."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "translation.md"


def test_the_example_runs_and_stitches(capsys):
    code = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)[0]
    ns: dict = {}
    exec(compile(code, str(DOC), "exec"), ns)  # noqa: S102 - our own documentation
    assert ns["stitched"] > 0.9 * ns["head_b"].score(ns["space_b"][ns["test"]], ns["y"][ns["test"]])
    assert "stitched" in capsys.readouterr().out


def test_the_documented_threshold_is_the_code_s():
    from relreps.translation import CONSTANT_FEATURE_RTOL

    found = re.search(r"`relreps.translation.CONSTANT_FEATURE_RTOL` = ([0-9.e+-]+)",
                      DOC.read_text().replace("\n", " "))
    assert found and float(found.group(1)) == CONSTANT_FEATURE_RTOL
