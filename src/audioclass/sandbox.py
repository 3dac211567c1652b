"""Scratch copies of this project, for running the real pipeline in tests and benchmarks.

A sandbox is a fresh git repository holding the project's files (what git
tracks plus untracked, unignored files), with ``params.yaml`` overridden and
a dataset source of its own, so ``dvc repro`` there never touches the
project's data, cache or experiment stores.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

import yaml


def project_files(root: Path) -> list[str]:
    """The project's files as git sees them: tracked or new, never ignored, still present."""
    listing = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return sorted(name for name in listing.split("\0") if name and (root / name).is_file())


def create(root: Path, dest: Path, params: Mapping | None = None, *, with_lock: bool = False) -> Path:
    """Copy the project at ``root`` into ``dest`` (a new git repo, one commit) with ``params`` merged in.

    The project's ``dvc.lock`` stays behind unless ``with_lock``: it records the project's own data and
    runs, which a sandbox does not have (``dvc pull`` there would look for them, e.g. for a run the
    sandbox adds under a project run's name).
    """
    for name in (n for n in project_files(root) if with_lock or n != "dvc.lock"):
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, dest / name)
    if params:
        set_params(dest, params)
    git = ["git", "-c", "user.name=sandbox", "-c", "user.email=sandbox@localhost"]
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run([*git, "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "sandbox"], cwd=dest, check=True)
    return dest


def set_params(dest: Path, overrides: Mapping) -> None:
    """Deep-merge ``overrides`` into ``dest/params.yaml``."""
    path = dest / "params.yaml"
    path.write_text(yaml.safe_dump(merged(yaml.safe_load(path.read_text()), overrides), sort_keys=False))


class Replace(dict):
    """An override that takes the place of the mapping it names instead of merging into it: for mappings
    whose keys are names the user chose (``train.runs``, ``classical.models``)."""


def merged(params: dict, overrides: Mapping) -> dict:
    """``params`` with ``overrides`` deep-merged in: the params a sandbox made with them would run."""
    result = dict(params)
    for key, value in overrides.items():
        if isinstance(value, Replace):
            result[key] = dict(value)
        elif isinstance(value, Mapping) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result


def tiny_esc10(release: Path, dest: Path, per_class: int) -> Path:
    """A small ESC-10 release: ``per_class`` real clips per class, taken from as many folds as possible."""
    for folder in sorted(p for p in release.iterdir() if p.is_dir()):
        by_fold: dict[str, list[Path]] = {}
        for clip in sorted(folder.iterdir()):
            by_fold.setdefault(clip.name.split("-")[0], []).append(clip)
        picks, round_ = [], 0
        while len(picks) < per_class and any(len(c) > round_ for c in by_fold.values()):
            picks += [clips[round_] for clips in by_fold.values() if len(clips) > round_][: per_class - len(picks)]
            round_ += 1
        (dest / folder.name).mkdir(parents=True)
        for clip in picks:
            shutil.copyfile(clip, dest / folder.name / clip.name)
    return dest


def environment(sandbox: Path) -> dict[str, str]:
    """This interpreter's environment for commands run in ``sandbox``: its ``bin`` first on the
    ``PATH``, and the sandbox's own copy of the package first on the ``PYTHONPATH``.

    The editable install points at the project's working tree; without the override, stages run
    in the sandbox would import whatever the tree holds when they start, edits made since included.
    """
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    python_path = os.pathsep.join(p for p in [str(sandbox.resolve() / "src"), os.environ.get("PYTHONPATH", "")] if p)
    return {**os.environ, "PATH": path, "PYTHONPATH": python_path}


def dvc(
    sandbox: Path, *args: str, check: bool = True, env: Mapping[str, str] | None = None, timeout: float = 1800
) -> subprocess.CompletedProcess:
    """Run ``dvc`` with the sandbox's :func:`environment` (plus ``env``) inside the sandbox; output captured.

    The output goes to files, not pipes: ``dvc queue start`` leaves daemonised workers behind that inherit
    its output, and a pipe would keep the caller waiting for the last of them to exit (for ever, if one hangs
    on its way out). ``timeout`` (seconds) bounds the call all the same.
    """
    env = {**environment(sandbox), **(env or {})}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        try:
            process = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=sandbox, env=env, stdout=out, stderr=err, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"dvc {' '.join(args)} did not finish within {timeout:g} s in {sandbox}") from None
        out.seek(0), err.seek(0)
        result = subprocess.CompletedProcess(process.args, process.returncode, out.read(), err.read())
    if check and result.returncode != 0:
        raise RuntimeError(f"dvc {' '.join(args)} failed in {sandbox}:\n{result.stdout}\n{result.stderr}")
    return result
