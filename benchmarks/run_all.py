"""Run every benchmark at its documented size (several minutes on 2 cores; needs ~7 GB disk)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import bench_memmap  # noqa: E402
import bench_metrics  # noqa: E402
import bench_projection  # noqa: E402

if __name__ == "__main__":
    quick = "--quick" in sys.argv
    bench_projection.main(["--n", "20000"] if quick else [])
    bench_metrics.main(["--n", "20000", "--n-naive", "5000"] if quick else [])
    bench_memmap.main(["--n", "200000"] if quick else [])
