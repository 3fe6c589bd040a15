"""The documentation's invariance table matches the registry."""

from __future__ import annotations

from pathlib import Path

from relreps import similarity

DOC = Path(__file__).resolve().parents[1] / "docs" / "similarities.md"


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
