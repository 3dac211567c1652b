"""The real ``dvc repro`` on a corpus that is not ESC-10: RAVDESS-style names whose labels are zero-padded numbers."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audioclass import sandbox
from conftest import PROJECT, TINY, tone

pytestmark = pytest.mark.e2e

EMOTIONS = {"01": 250, "03": 500, "04": 1000, "05": 2000}  # label as written: the tone that stands for it, Hz
ACTORS = 6
PATTERN = r"^\d+-\d+-(?P<label>\d+)-\d+-(?P<statement>\d+)-\d+-(?P<group>\d+)$"
PROFILE = {
    **TINY,
    "extract": {"source": "data/raw/RAVDESS", "layout": "filename", "label_pattern": PATTERN, "n_folds": 3, "duration": 1.0},
    "raw_vectors": {"seconds": 1.0},  # the first second of each 1-s clip
    "split": {"val_fraction": 0.5},  # 6 actors in 3 folds: 2 test, 2 validation, 2 train
    "tune": {**TINY["tune"], "enabled": False},
    "feature_models": {"cv_folds": 2},
    "embed": {"models": ["aisfx-layers"]},  # the licence-clean pretrained member
}


def write_ravdess(root: Path) -> None:
    """Two statements per actor and emotion, in actor folders, as RAVDESS ships them."""
    for actor in range(1, ACTORS + 1):
        folder = root / f"Actor_{actor:02d}"
        folder.mkdir(parents=True)
        for emotion, freq in EMOTIONS.items():
            for statement in (1, 2):
                y = tone(freq * (1 + 0.03 * actor), 0.8, 22050, seed=100 * actor + statement)
                sf.write(folder / f"03-01-{emotion}-01-0{statement}-01-{actor:02d}.wav", y, 22050)


def column(path: Path, name: str) -> list[str]:
    with path.open(newline="") as f:
        return [row[name] for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    work = sandbox.create(PROJECT, tmp_path_factory.mktemp("corpus") / "project", PROFILE)
    write_ravdess(work / "data/raw/RAVDESS")
    sandbox.dvc(work, "add", "data/raw/RAVDESS")
    result = sandbox.dvc(work, "repro")
    assert "Running stage 'report'" in result.stdout, result.stdout
    return work


def test_labels_come_out_exactly_as_the_file_names_wrote_them(workspace):
    labels = sorted(EMOTIONS)
    assert sorted(set(column(workspace / "data/prepared/metadata.csv", "class_name"))) == labels
    for split in ("train", "val", "test"):
        assert sorted(set(column(workspace / f"data/spectrograms/{split}/index.csv", "class_name"))) == labels
    metrics = (workspace / "models/run-1/metrics.json").read_text()
    assert json.loads(metrics)["class_names"] == labels and "NaN" not in metrics
    predictions = workspace / "reports/ensemble/ensemble_predictions.csv"
    assert set(column(predictions, "actual")) == set(labels) and set(column(predictions, "predicted")) <= set(labels)
    ensemble = (workspace / "reports/ensemble/ensemble.json").read_text()
    json.loads(ensemble, parse_constant=lambda c: pytest.fail(f"ensemble.json holds {c}"))


def test_actors_are_sources_and_folds_are_assigned(workspace):
    sources = column(workspace / "data/split.csv", "source_id")
    splits = column(workspace / "data/split.csv", "split")
    assert sorted(set(sources)) == [f"{a:02d}" for a in range(1, ACTORS + 1)]
    by_actor = {}
    for source, split in zip(sources, splits):
        by_actor.setdefault(source, set()).add(split)
    assert all(len(s) == 1 for s in by_actor.values())  # an actor's clips never straddle two splits
    assert sorted(set(column(workspace / "data/prepared/metadata.csv", "fold"))) == ["1", "2", "3"]


def test_the_report_has_no_published_column_for_this_corpus(workspace):
    results = (workspace / "reports/results.md").read_text()
    assert results.startswith("# Results\n") and "Published" not in results and "81.06" not in results
    assert "| runs of 2 architectures, 2 single runs (mean ± SE) | spectrogram |" in results


def test_predict_prints_labels_as_text_and_marks_silence(workspace, tmp_path):
    clip = next((workspace / "data/raw/RAVDESS/Actor_01").glob("03-01-03-*.wav"))
    silent = tmp_path / "silence.wav"
    sf.write(silent, np.zeros(22050, np.float32), 22050)
    predict = [str(Path(sys.executable).parent / "audioclass"), "predict", str(clip), str(silent), "--json"]
    result = subprocess.run(predict, cwd=workspace, capture_output=True, text=True, env=sandbox.environment(workspace))
    assert result.returncode == 0, result.stderr
    heard, quiet = (json.loads(line) for line in result.stdout.splitlines())
    assert isinstance(heard["prediction"], str) and heard["prediction"] in EMOTIONS and set(heard["probabilities"]) == set(EMOTIONS)
    assert quiet == {"file": str(silent), "silent": True, "prediction": None, "min_confidence": heard["min_confidence"], "detections": []}
    assert 0 <= heard["min_confidence"] <= 1  # the ensemble stage's, chosen on validation
    # The registry's copy of the ensemble answers the same, through MLflow's pyfunc.
    registered = subprocess.run(
        [*predict, "--registered", "models:/audioclass-ensemble/latest"],
        cwd=workspace,
        capture_output=True,
        text=True,
        env=sandbox.environment(workspace),
    )
    assert registered.returncode == 0, registered.stderr
    heard_there, quiet_there = (json.loads(line) for line in registered.stdout.splitlines())
    assert heard_there["prediction"] == heard["prediction"] and set(heard_there["probabilities"]) == set(EMOTIONS)
    assert quiet_there == quiet
    # The aiSFX head alone, whichever group validation chose: new audio through the embed stage's own code.
    alone = subprocess.run(
        [*predict[:3], "--method", "pretrained/average", "--json"],
        cwd=workspace,
        capture_output=True,
        text=True,
        env=sandbox.environment(workspace),
    )
    assert alone.returncode == 0, alone.stderr
    answer = json.loads(alone.stdout)
    assert answer["prediction"] in EMOTIONS and set(answer["probabilities"]) == set(EMOTIONS)


def test_training_runs_name_their_data_version_in_mlflow(workspace):
    import yaml
    from mlflow.tracking import MlflowClient

    lock = yaml.safe_load((workspace / "dvc.lock").read_text())["stages"]
    (spectrograms,) = [o["md5"] for o in lock["spectrograms"]["outs"] if o["path"] == "data/spectrograms"]
    client = MlflowClient(f"sqlite:///{workspace / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("audioclass")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    runs = client.search_runs([experiment.experiment_id], "tags.pipeline_role = 'train'")
    assert len(runs) == 2
    for run in runs:
        (dataset,) = [d.dataset for d in run.inputs.dataset_inputs]
        assert (dataset.name, dataset.digest) == ("data/spectrograms", spectrograms)  # the DVC hash of what it read
        assert dataset.source_type == "local" and json.loads(dataset.source)["uri"] == str(workspace / "data/spectrograms")


def test_a_second_repro_does_nothing(workspace):
    again = sandbox.dvc(workspace, "repro")
    assert "Running stage" not in again.stdout and "Data and pipelines are up to date." in again.stdout
