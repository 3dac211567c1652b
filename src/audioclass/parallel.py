"""Order-preserving parallel map with a progress bar.

Results never depend on the number of workers: each task is a pure function
of its item, and results come back in input order.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TypeVar

import joblib
from tqdm import tqdm

T = TypeVar("T")
R = TypeVar("R")

JOBS_ENV = "AUDIOCLASS_JOBS"


def default_jobs() -> int:
    """Worker count: ``$AUDIOCLASS_JOBS`` if set, else every core this process may use."""
    if os.environ.get(JOBS_ENV):
        return max(1, int(os.environ[JOBS_ENV]))
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def parallel_map(fn: Callable[[T], R], items: Sequence[T], *, jobs: int, desc: str, unit: str = "it") -> list[R]:
    """``[fn(x) for x in items]``, in worker processes when ``jobs > 1``.

    An exception in a task is re-raised here unchanged (e.g. a DataError that
    names the bad file), and the remaining tasks are cancelled.
    """
    bar = dict(total=len(items), desc=desc, unit=unit, disable=None, mininterval=1.0)
    if jobs <= 1 or len(items) <= 1:
        return [fn(item) for item in tqdm(items, **bar)]
    with joblib.Parallel(n_jobs=min(jobs, len(items)), return_as="generator") as run:
        return list(tqdm(run(joblib.delayed(fn)(item) for item in items), **bar))
