"""Run relreps' dask computations on a cluster: an existing one by address, or a local one.

:func:`get_client` returns a ``dask.distributed.Client`` that becomes dask's default scheduler,
so every lazy result of relreps (dask projections, :mod:`relreps.neighbors` searches, Zarr
writes) computes on that cluster::

    from relreps.distributed import get_client
    with get_client(workers=4, memory_limit="4GB") as client:      # a LocalCluster
        rm = retrieval_metrics(da.from_zarr("a.zarr"), da.from_zarr("b.zarr"))

    client = get_client("tcp://scheduler-host:8786")                 # an existing cluster

The command line's ``--scheduler ADDRESS`` and ``--workers N`` call it. A local cluster runs
each worker in its own process under a nanny: the memory limit is enforced per worker (spilling
to disk at 60%, pausing at 80%, restarting at 95%), a worker that dies is restarted, and the
tasks it held are recomputed from their inputs, so results do not depend on failures. Workers
start with one BLAS/OpenMP thread each (dask's default environment), so ``threads_per_worker``
is the number of cores a worker uses.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

from relreps.errors import MissingDependencyError, OptionError
from relreps.validation import check_float, check_int

__all__ = ["get_client", "client_info", "usable_cores"]


def _distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise MissingDependencyError("distributed", "running on a dask cluster",
                                     "pip install 'relreps[dist]'") from None
    return distributed


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask; os.cpu_count() where the
    platform has none)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _check_memory_limit(memory_limit: Any) -> str | int | float:
    """``"auto"``, a byte count (int > 0), a size string such as ``"2GB"``, or a fraction."""
    if isinstance(memory_limit, str):
        if memory_limit == "auto":
            return memory_limit
        from dask.utils import parse_bytes

        try:
            size = parse_bytes(memory_limit)
        except (ValueError, TypeError):
            raise OptionError(f"memory_limit {memory_limit!r} is not a size (e.g. '2GB', "
                              "'512MiB'), a byte count, a fraction of memory or 'auto'") from None
        if size <= 0:
            raise OptionError(f"memory_limit must be positive, got {memory_limit!r}")
        return memory_limit
    if isinstance(memory_limit, float):
        return check_float(memory_limit, "memory_limit", min_value=0.0, max_value=1.0,
                           min_inclusive=False)
    return check_int(memory_limit, "memory_limit", min_value=1)


def get_client(scheduler: str | None = None, workers: int | None = None,
               threads_per_worker: int = 1, memory_limit: str | int | float = "auto", *,
               dashboard: bool = False, timeout: float = 10.0) -> Any:
    """A dask ``Client``: connected to `scheduler`, or owning a new local cluster.

    Parameters
    ----------
    scheduler : address of a running scheduler (``tcp://host:8786``, as printed by
        ``dask scheduler``). Mutually exclusive with `workers`.
    workers : number of worker processes of a new ``LocalCluster`` (default, when neither
        argument is given: one per usable core divided by `threads_per_worker`).
    threads_per_worker : threads (and cores) per local worker.
    memory_limit : per local worker: ``"auto"`` (the machine's memory shared between the
        workers), bytes, a size string (``"2GB"``) or a fraction of the machine's memory.
    dashboard : serve the dask dashboard of a local cluster (on a free port).
    timeout : seconds to wait for the scheduler (or the local cluster) to answer.

    Returns
    -------
    ``distributed.Client``, set as dask's default scheduler. Use it as a context manager (or
    call ``close()``): closing a client made here also shuts down its local cluster; an existing
    cluster keeps running.

    Raises
    ------
    OptionError : both `scheduler` and `workers`, an unreachable scheduler, a bad size.
    MissingDependencyError : ``distributed`` is not installed (``pip install 'relreps[dist]'``).
    """
    distributed = _distributed()
    timeout = check_float(timeout, "timeout", min_value=0.0, min_inclusive=False)
    if scheduler is not None and workers is not None:
        raise OptionError("give either scheduler (an existing cluster's address) or workers "
                          "(a new local cluster), not both")
    if scheduler is not None:
        if not isinstance(scheduler, str) or not scheduler.strip():
            raise OptionError(f"scheduler must be an address such as 'tcp://host:8786', got "
                              f"{scheduler!r}")
        try:
            return distributed.Client(scheduler.strip(), timeout=timeout)
        except (OSError, TimeoutError, ValueError) as e:
            raise OptionError(f"cannot reach the dask scheduler at {scheduler!r}: {e}. Start "
                              "one with `dask scheduler` and workers with `dask worker "
                              "ADDRESS`, or use --workers N for a local cluster") from None
    threads_per_worker = check_int(threads_per_worker, "threads_per_worker", min_value=1)
    if workers is None:
        workers = max(1, usable_cores() // threads_per_worker)
    workers = check_int(workers, "workers", min_value=1)
    memory_limit = _check_memory_limit(memory_limit)
    if not isinstance(dashboard, bool):
        raise OptionError(f"dashboard must be True or False, got {dashboard!r}")
    # Without an address the Client owns the LocalCluster it starts, and closes it with itself.
    return distributed.Client(n_workers=workers, threads_per_worker=threads_per_worker,
                              memory_limit=memory_limit, processes=True,
                              dashboard_address=":0" if dashboard else None,
                              timeout=timeout)


def client_info(client: Any) -> dict[str, Any]:
    """What a run report records about the cluster: address, workers, threads, memory."""
    info = client.scheduler_info()
    ws = info.get("workers", {})
    return {"scheduler": info.get("address"),
            "workers": len(ws),
            "threads": int(sum(w.get("nthreads", 0) for w in ws.values())),
            "memory_limit_bytes": int(sum(w.get("memory_limit", 0) or 0 for w in ws.values()))}


@contextlib.contextmanager
def cluster_client(scheduler: str | None = None, workers: int | None = None
                   ) -> Iterator[Any]:
    """A client for the duration of one command, or None when neither argument is given.

    A local cluster started here is shut down on exit; an existing cluster keeps running.
    Dask's own start/stop chatter is kept below ERROR meanwhile (the CLI prints one line a step).
    """
    if scheduler is None and workers is None:
        yield None
        return
    logger = logging.getLogger("distributed")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with get_client(scheduler=scheduler, workers=workers) as client:
            yield client
    finally:
        logger.setLevel(level)
