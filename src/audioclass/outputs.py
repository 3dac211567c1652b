"""Atomic stage outputs: a stage's output appears whole or not at all.

A stage writes into a temporary sibling (same folder, so the final rename is
atomic on one filesystem). On success the old output, if any, is replaced; on
any error or interrupt the temporary is removed and the old output is kept.
A process killed outright (SIGKILL, power loss) cannot clean up: its
temporary, named after its process id, is removed by the next writer of the
same output once that process is gone.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from audioclass.errors import DataError, first_line

# Set by on_interrupt, the SIGINT handler every stage runs with. CPython prints and
# ignores a KeyboardInterrupt raised while a finaliser runs (a __del__, a weakref
# callback), so a Ctrl-C can be lost mid-stage; the flag still keeps the stage from
# committing its output after one.
_interrupted = False


def on_interrupt(signum, frame) -> None:
    """SIGINT: remember it, then raise KeyboardInterrupt as Python's default handler does."""
    global _interrupted
    _interrupted = True
    raise KeyboardInterrupt


def _commit(tmp: Path, path: Path) -> None:
    if _interrupted:
        raise KeyboardInterrupt  # one was lost on the way: the output must not appear
    if path.exists() or path.is_symlink():
        _remove(path)
    os.replace(tmp, path)


def _stem(path: Path) -> str:
    return f".{path.name}.pid"  # + "<pid>.<random>.tmp": whose temporary it is


def _sweep_stale(path: Path) -> None:
    """Remove temporaries of ``path`` left by processes that no longer exist."""
    for stale in path.parent.glob(f"{glob.escape(_stem(path))}*.tmp"):
        pid = stale.name[len(_stem(path)) :].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            _remove(stale)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0 checks existence; PermissionError means someone else's live process
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder that becomes ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _sweep_stale(path)
    tmp = Path(tempfile.mkdtemp(prefix=f"{_stem(path)}{os.getpid()}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        _commit(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary file path that becomes ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _sweep_stale(path)
    fd, name = tempfile.mkstemp(prefix=f"{_stem(path)}{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        _commit(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def require_inputs(paths: list[Path], expected: str) -> None:
    """Raise one DataError line for the first missing input file, saying what should have made it."""
    for path in paths:
        if not Path(path).is_file():
            raise DataError(f"{path}: missing; expected {expected}")


def load_array(path: Path, rows: int | None = None) -> np.ndarray:
    """``np.load(path)``, as one DataError line if the file is truncated or not an array, or if it lacks ``rows`` rows.

    Outputs are written atomically, so a bad file here was damaged or copied in by hand.
    """
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, EOFError, OSError) as err:
        raise DataError(f"{path}: unreadable NumPy array ({first_line(err)}); expected a complete .npy file") from None
    if rows is not None and len(array) != rows:
        raise DataError(f"{path}: {len(array)} rows; expected {rows}, one per row of its index.csv")
    return array
