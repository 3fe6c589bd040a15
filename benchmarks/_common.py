"""Shared timing and memory helpers for the benchmarks (not tests: they print, never assert)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def best_of(fn: Callable[[], Any], repeat: int | None = 3, budget: float = 3.0) -> float:
    """Best wall time of `repeat` calls, in seconds; with ``repeat=None``, of as many calls (1 to
    5) as fit in about `budget` seconds (short timings best-of-several, long ones once)."""
    times: list[float] = []
    while len(times) < (repeat or 5) and (repeat or not times or sum(times) < budget):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def machine_info() -> dict[str, Any]:
    """The machine fields every benchmark JSON records."""
    import platform

    import torch

    return {"platform": platform.platform(), "processor": platform.processor(),
            "torch_threads": torch.get_num_threads()}


def best_of_interleaved(fns: dict[str, Callable[[], Any]], repeat: int = 3) -> dict[str, float]:
    """Best wall time of each function over `repeat` rounds, one call of each per round: a
    baseline and the code measured against it see the same drift of the machine (memory
    layout, page cache, other load) instead of being timed minutes apart."""
    best = {name: float("inf") for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_rss() -> int:
    """Reset this process's peak RSS to the current RSS (Linux); returns the current RSS in KiB."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return _status_kib("VmRSS")


def peak_rss_kib() -> int:
    return _status_kib("VmHWM")


def report(title: str, rows: list[tuple[str, str]]) -> None:
    print(f"\n== {title}")
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
