"""Bridges to pieces other parts of relreps are adding in parallel, with marked stand-ins.

Each function first uses the library's own implementation; the stand-in below it (marked SHIM)
only runs while that implementation is missing, and goes once it is merged:

- :func:`make_head` -> ``relreps.stitching.make_head`` (the ``"logreg-cv"`` spec);
- :func:`get_client` -> ``relreps.distributed.get_client``;
- :func:`dask_supported` probes whether the projection and neighbour search accept dask arrays.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from typing import Any

import numpy as np

from relreps.errors import MissingDependencyError, RelrepsError

__all__ = ["make_head", "get_client", "client_for", "dask_supported", "CV_GRID"]

#: Regularisation grid of the SHIM "logreg-cv" head (C of an L2 logistic regression).
CV_GRID = tuple(float(c) for c in np.logspace(-4, 2, 7))


def make_head(spec: Any, seed: int) -> Any:
    """A fresh, unfitted classifier for `spec` (see ``relreps.stitching.make_head``)."""
    from relreps.stitching import make_head as library_make_head

    try:
        return library_make_head(spec, seed)
    except RelrepsError:
        if spec != "logreg-cv":
            raise
    # SHIM: until relreps.stitching.make_head accepts "logreg-cv": standardised features, L2
    # logistic regression whose C is chosen by stratified 5-fold cross-validation on the fit
    # data only (refit on all of it).
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return GridSearchCV(make_pipeline(StandardScaler(),
                                      LogisticRegression(max_iter=2000, random_state=seed)),
                        {"logisticregression__C": list(CV_GRID)},
                        cv=StratifiedKFold(5, shuffle=True, random_state=seed))


def get_client(scheduler: str | None = None, workers: int | None = None) -> Any:
    """A ``dask.distributed.Client``: the cluster at `scheduler`, or a local one of `workers`
    processes (1 thread each). None when neither is given."""
    if scheduler is None and workers is None:
        return None
    try:
        from relreps.distributed import get_client as library_get_client
    except ImportError:
        library_get_client = None
    if library_get_client is not None:
        return library_get_client(scheduler=scheduler, workers=workers)
    # SHIM: until relreps.distributed (helper "neighbors") is merged.
    from relreps.validation import check_int

    try:
        from distributed import Client, LocalCluster
    except ImportError as e:
        raise MissingDependencyError("distributed", "--scheduler/--workers",
                                     "pip install 'relreps[dist]'") from e
    if scheduler is not None:
        try:
            return Client(scheduler, timeout="10s")
        except OSError as e:
            raise RelrepsError(f"cannot reach the Dask scheduler at {scheduler} ({e})") from None
    n = check_int(workers, "--workers", min_value=1)
    return Client(LocalCluster(n_workers=n, threads_per_worker=1, dashboard_address=None))


@contextlib.contextmanager
def client_for(scheduler: str | None, workers: int | None) -> Iterator[Any]:
    """A client for the duration of a command (None without a cluster); a local cluster started
    here is shut down after. Dask's own start/stop chatter is kept below ERROR meanwhile."""
    if scheduler is None and workers is None:
        yield None
        return
    logger = logging.getLogger("distributed")
    level = logger.level
    logger.setLevel(logging.ERROR)
    client = None
    try:
        client = get_client(scheduler, workers)
        yield client
    finally:
        if client is not None:
            cluster = getattr(client, "cluster", None) if workers is not None else None
            client.close()
            if cluster is not None:
                cluster.close()
        logger.setLevel(level)


@functools.cache
def dask_supported(what: str) -> bool:
    """Whether ``relreps.projection`` ("projection") or the neighbour search ("neighbors")
    accepts dask arrays in this installation (probed once on tiny arrays)."""
    try:
        import dask
        import dask.array as da
    except ImportError:
        return False
    x = da.from_array(np.eye(4, 3) + 1.0, chunks=(2, 3))
    try:
        with dask.config.set(scheduler="synchronous"):
            if what == "projection":
                from relreps.projection import relative_projection

                out = relative_projection(x, np.eye(2, 3) + 1.0)
                return hasattr(out, "dask")
            if what == "neighbors":
                from relreps.metrics import retrieval_metrics

                retrieval_metrics(x, x, 1)
                return True
    except (RelrepsError, TypeError, AttributeError, NotImplementedError):
        return False
    raise ValueError(f"unknown capability {what!r}")
