"""How many BLAS/OpenMP threads a computation gets.

Small problems (a head fitted on a few thousand rows, a relative projection of a few hundred
anchors) run their matrix products on one thread: splitting a tiny product costs more than it
gives, and on a machine where another process holds a core, threads that wait for each other
make lbfgs 10-15x slower (measured: one logistic-regression head with C chosen by
cross-validation on 1,077 x 64 digits features took 0.65 s on one thread and 9 s on two next to
one busy process, 2-core machine). Larger problems keep the caller's setting.
"""

from __future__ import annotations

import contextlib
from typing import Any

__all__ = ["SMALL_PROBLEM_ELEMENTS", "threads_for"]

#: Problems whose data has at most this many elements (rows x features) run on one thread.
SMALL_PROBLEM_ELEMENTS = 1 << 22


def threads_for(n_elements: int) -> Any:
    """A context manager: one BLAS/OpenMP thread when `n_elements` is at most
    :data:`SMALL_PROBLEM_ELEMENTS`, else the current thread settings unchanged."""
    if int(n_elements) > SMALL_PROBLEM_ELEMENTS:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)
