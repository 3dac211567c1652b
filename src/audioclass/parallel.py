"""Order-preserving parallel map with a progress bar, on this machine's cores or on a Dask cluster.

Results never depend on the number of workers: each task is a pure function
of its item, and results come back in input order.

With ``$AUDIOCLASS_DASK_SCHEDULER`` set to a scheduler's address
(``tcp://host:8786``), the same ``joblib.Parallel`` call runs through joblib's
Dask backend on that cluster's workers instead of local processes. The
workers need the package installed and the project's files at the same paths
(a shared disk), since tasks read and write them.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import joblib
from tqdm import tqdm

from audioclass.errors import ConfigError, first_line
from audioclass.urls import masked

T = TypeVar("T")
R = TypeVar("R")

JOBS_ENV = "AUDIOCLASS_JOBS"
DASK_ENV = "AUDIOCLASS_DASK_SCHEDULER"


def default_jobs() -> int:
    """Worker count: ``$AUDIOCLASS_JOBS`` if set, else every core this process may use."""
    if os.environ.get(JOBS_ENV):
        return max(1, int(os.environ[JOBS_ENV]))
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@functools.lru_cache(maxsize=1)
def dask_client(address: str) -> Any:
    """This process's client of the Dask scheduler at ``address`` (one for the stage's every map)."""
    from dask.distributed import Client

    try:
        return Client(address, timeout="5s", set_as_default=False)
    except (OSError, TimeoutError) as err:
        raise ConfigError(
            f"${DASK_ENV}={masked(address)}: no Dask scheduler answers ({first_line(err)}); "
            f"expected a running `dask scheduler`, or unset {DASK_ENV} to use this machine's cores"
        ) from None


def _backend(jobs: int, items: int) -> tuple[contextlib.AbstractContextManager, int]:
    """(the joblib backend to run in, its worker count): the Dask cluster if one is named, else local processes."""
    address = os.environ.get(DASK_ENV)
    if address:
        return joblib.parallel_config(backend="dask", client=dask_client(address)), -1
    return contextlib.nullcontext(), min(jobs, items)


def parallel_map(fn: Callable[[T], R], items: Sequence[T], *, jobs: int, desc: str, unit: str = "it") -> list[R]:
    """``[fn(x) for x in items]``, in worker processes when ``jobs > 1`` or on a Dask cluster (``$AUDIOCLASS_DASK_SCHEDULER``).

    An exception in a task is re-raised here unchanged (e.g. a DataError that
    names the bad file), and the remaining tasks are cancelled.
    """
    return list(parallel_imap(fn, items, jobs=jobs, desc=desc, unit=unit))


def parallel_imap(fn: Callable[[T], R], items: Sequence[T], *, jobs: int, desc: str, unit: str = "it") -> Iterator[R]:
    """``parallel_map``'s results one at a time, in input order, as they are done.

    Only the results not yet consumed are held (joblib dispatches a few tasks
    ahead), so a caller that writes each one out needs memory for a few, not all.
    """
    bar = dict(total=len(items), desc=desc, unit=unit, disable=None, mininterval=1.0)
    if len(items) <= 1 or (jobs <= 1 and not os.environ.get(DASK_ENV)):
        yield from (fn(item) for item in tqdm(items, **bar))
        return
    backend, n_jobs = _backend(jobs, len(items))
    with backend, joblib.Parallel(n_jobs=n_jobs, return_as="generator") as run:
        yield from tqdm(run(joblib.delayed(fn)(item) for item in items), **bar)
