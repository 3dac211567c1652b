"""The real ``dvc repro`` on a tiny profile, in a temporary copy of the project."""

import json

import numpy as np
import pandas as pd
import pytest

from audioclass import sandbox
from conftest import PROJECT, shared_esc10

pytestmark = pytest.mark.e2e

# 3 clips per class remain outside the test fold, so validation takes one grouped third.
TINY = {"split": {"val_fraction": 0.34}, "augment": {"copies": 2}, "spectrograms": {"preview_per_class": 3}}
PER_CLASS = 4


def stages_run(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A sandbox after one full ``dvc repro`` on 4 real clips per class, 2 copies."""
    root = tmp_path_factory.mktemp("e2e")
    source = sandbox.tiny_esc10(shared_esc10(), root / "ESC-10", PER_CLASS)
    work = sandbox.create(PROJECT, root / "project", {**TINY, "extract": {"source": str(source)}})
    first = sandbox.dvc(work, "repro")
    assert stages_run(first.stdout) == ["extract", "split", "augment", "spectrograms"], first.stdout
    return work


def test_repro_produces_every_output(workspace):
    n_clips = 10 * PER_CLASS
    meta = pd.read_csv(workspace / "data/prepared/metadata.csv")
    assert len(meta) == n_clips and (meta.groupby("class_name").size() == PER_CLASS).all()
    assert len(list((workspace / "data/augmented/wav").glob("*.wav"))) == 2 * n_clips
    total = 0
    for split in ("train", "val", "test"):
        x = np.load(workspace / f"data/spectrograms/{split}/x.npy", mmap_mode="r")
        assert x.shape[1:] == (64, 216, 1)
        total += len(x)
    assert total == 2 * n_clips
    assert (workspace / "reports/spectrogram_grid.png").stat().st_size > 10_000
    metrics = json.loads(sandbox.dvc(workspace, "metrics", "show", "--json").stdout)
    summary = metrics[""]["data"]["reports/data.json"]["data"]
    assert sum(summary["files"].values()) == 2 * n_clips and sum(summary["clips"].values()) == n_clips
    assert summary["clips"]["test"] == 10 and summary["classes"] == 10  # one test-fold clip per class


def test_second_repro_does_nothing(workspace):
    again = sandbox.dvc(workspace, "repro")
    assert stages_run(again.stdout) == [] and "Data and pipelines are up to date." in again.stdout
    assert "up to date" in sandbox.dvc(workspace, "status").stdout


def test_spectrogram_param_reruns_only_spectrograms(workspace):
    sandbox.set_params(workspace, {"spectrograms": {"n_mels": 48}})
    result = sandbox.dvc(workspace, "repro")
    assert stages_run(result.stdout) == ["spectrograms"], result.stdout
    assert np.load(workspace / "data/spectrograms/test/x.npy", mmap_mode="r").shape[1] == 48


def test_split_param_reruns_split_and_spectrograms_but_not_augment(workspace):
    sandbox.set_params(workspace, {"split": {"test_fold": 2}})
    result = sandbox.dvc(workspace, "repro")
    assert stages_run(result.stdout) == ["split", "spectrograms"], result.stdout
    index = pd.read_csv(workspace / "data/spectrograms/test/index.csv")
    assert set(index["fold"]) == {2}


def test_bad_param_fails_the_stage_with_one_line(workspace):
    sandbox.set_params(workspace, {"augment": {"copies": 0}})
    result = sandbox.dvc(workspace, "repro", check=False)
    assert result.returncode != 0
    assert "error: params.yaml: augment.copies: expected an integer >= 1 (1 = originals only), got 0" in result.stderr + result.stdout
    assert not (workspace / "data/augmented").exists() or not any((workspace / "data/augmented").glob(".augmented.*"))
