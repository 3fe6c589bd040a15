"""The Python examples of docs/concepts.md and docs/similarities.md run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from relreps import similarity as S

DOCS = Path(__file__).resolve().parents[1] / "docs"
BLOCKS = [(name, i, code) for name in ("concepts.md", "similarities.md")
          for i, code in enumerate(re.findall(r"```python\n(.*?)```",
                                              (DOCS / name).read_text(), flags=re.S))]


def test_the_docs_have_examples():
    assert {name for name, _, _ in BLOCKS} == {"concepts.md", "similarities.md"}


@pytest.mark.parametrize("name, i, code", BLOCKS, ids=[f"{n}-{i}" for n, i, _ in BLOCKS])
def test_doc_example_runs(name, i, code, monkeypatch, capsys):
    monkeypatch.setattr(S, "_REGISTRY", dict(S._REGISTRY))  # examples may register
    exec(compile(code, f"{name}:block{i}", "exec"), {"__name__": f"doc_{i}"})
