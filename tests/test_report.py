"""The results table: every model stage's row beside its published figure."""

import json

import pandas as pd
import pytest
import yaml

from audioclass.errors import DataError
from audioclass.stages.report import main
from conftest import PROJECT


def scores(test_clip: float, test_file: float, val: float, every_file: bool = True) -> dict:
    """A method's figures; its validation log-loss falls as its validation accuracy rises. A head predicts only
    validation's originals, so a group with one has no accuracy on every file (``every_file`` false)."""
    return {
        "test_clip_accuracy": test_clip,
        "test_file_accuracy": test_file,
        "val_file_accuracy": val if every_file else None,
        "val_accuracy": val,
        "val_log_loss": 1 - val,
    }


@pytest.fixture
def reports(tmp_path):
    """A reports folder as the model stages leave it, with params for a two-cell 1D grid."""
    root = tmp_path / "reports"
    files = {
        "data.json": {"files": {"train": 5120, "val": 1280, "test": 1600}, "clips": {"train": 256, "val": 64, "test": 80}},
        "baselines/classical.json": {"knn_3": scores(0.15, 0.11, 0.12), "my_forest": scores(0.4, 0.3, 0.35)},
        "baselines/cnn1d/deep1-k7.json": scores(0.5, 0.43, 0.48),
        "baselines/cnn1d/shallow-k7.json": scores(0.3, 0.25, 0.28),
        "baselines/cnn1d/deep2-k3.json": scores(0.9, 0.9, 0.9),  # left over from an older grid: not in params
        "baselines/features.json": {
            "chroma_mel_mfcc": {"svm_rbf": {**scores(0.775, 0.775, 0), "cv_accuracy": 0.769, "cv_accuracy_sd": 0.062}}
        },
        "ensemble/ensemble.json": {
            "members": ["run-1", "run-2", "run-3", "head-birdnet"],
            "pretrained_members": ["head-birdnet"],
            # run-3 is best on test, run-2 on validation: the table must pick run-2.
            "single_members": {
                "test_clip_accuracy": [0.8, 0.82, 0.9, 0.91],
                "test_file_accuracy": [0.78, 0.8, 0.88, 0.91],
                "val_file_accuracy": [0.7, 0.85, 0.8, 0.87],  # the head's: on the originals it predicts
                "val_accuracy": [0.72, 0.86, 0.81, 0.9],  # on validation's originals
            },
            "groups": {
                "from_scratch": {
                    "members": ["run-1", "run-2", "run-3"],
                    "methods": {
                        "average": {**scores(0.85, 0.83, 0.84), "weights": None},
                        "swarm_jaya": {**scores(0.86, 0.84, 0.85), "weights": [0.5, 0.2, 0.3]},
                        "swarm_new": {**scores(0.84, 0.8, 0.85), "weights": [0.0, 1.0, 0.0]},
                    },
                },
                "pretrained": {"members": ["head-birdnet"], "methods": {"average": {**scores(0.91, 0.91, 0.87, False), "weights": None}}},
                "all": {
                    "members": ["run-1", "run-2", "run-3", "head-birdnet"],
                    "methods": {
                        "average": {**scores(0.9, 0.9, 0.88, False), "weights": None},
                        "swarm_jaya": {**scores(0.93, 0.93, 0.89, False), "weights": [0.4, 0.1, 0.2, 0.3]},
                    },
                },
            },
            "best": {"group": "all", "method": "swarm_jaya"},
        },
    }
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(json.dumps(content))
    (root / "train").mkdir()
    for run in ("run-1", "run-2", "run-3"):
        pd.DataFrame(
            {"epoch": [0, 1], "loss": [2.0, 1.0], "accuracy": [0.3, 0.6], "val_loss": [2.1, 1.2], "val_accuracy": [0.3, 0.5]}
        ).to_csv(root / "train" / f"{run}.csv", index=False)
    pd.DataFrame({"actual": ["dog", "dog", "rain", "rain"], "predicted": ["dog", "rain", "rain", "rain"]}).to_csv(
        root / "ensemble" / "ensemble_predictions.csv", index=False
    )
    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    params["cnn1d"].update(architectures=["deep1", "shallow"], first_kernels=[7])
    params["ensemble"]["chosen"] = "swarm_jaya"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "corpus.json").write_text(json.dumps({"name": "ESC-10", "layout": "esc10", "classes": ["dog", "rain"]}))
    return root


def run_report(reports, tmp_path) -> str:
    main(
        [
            "--reports",
            str(reports),
            "--corpus",
            str(tmp_path / "corpus.json"),
            "--out",
            str(tmp_path / "results.md"),
            "--metrics",
            str(tmp_path / "metrics.json"),
            "--params",
            str(tmp_path / "params.yaml"),
        ]
    )
    return (tmp_path / "results.md").read_text()


def test_every_row_sits_beside_its_published_figure(reports, tmp_path):
    table = run_report(reports, tmp_path)
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines() if line.startswith("| ") and "---" not in line}
    assert rows["knn_3"] == "| knn_3 | 1D raw | 15.0 % | 11.0 % | 12.0 % | 12.1 % |"
    assert rows["my_forest"].endswith("| – |")  # a model the study did not have
    assert rows["1D CNN deep1, first kernel 7"].endswith("| 50.5 % |") and "1D CNN shallow, first kernel 7" in rows
    assert "deep2" not in table  # only the cells params' grid declares
    assert (
        rows["svm_rbf"]
        == "| svm_rbf | features: chroma_mel_mfcc | 77.5 % | 77.5 % | CV 76.9 ± 6.2 % | 67.5 % (SVM, MFCC + ZCR, 5-fold CV) |"
    )
    assert rows["2D CNN, 3 single runs (mean ± SE)"].startswith("| 2D CNN, 3 single runs (mean ± SE) | spectrogram | 84.0 ± 3.1 % |")
    assert "best run by validation (run-2) | spectrogram | 82.0 % |" in table  # not run-3, the best on test
    assert rows["ensemble: swarm_jaya"].endswith("| 81.06 % |") and rows["ensemble: average"].endswith("| 78.88 % |")
    assert rows["ensemble: swarm_new"].endswith("| – |")
    assert "Test: 80 clips (1,600 files)" in table


def test_the_headline_metrics_are_the_chosen_ensemble_the_runs_the_heads_and_the_data(reports, tmp_path):
    run_report(reports, tmp_path)
    headline = json.loads((tmp_path / "metrics.json").read_text())
    assert headline == {
        "ensemble": "all/swarm_jaya",  # the best on validation, not swarm_new or the from-scratch group
        "val_loss": 0.11,
        "val": 0.89,
        "test": 0.93,
        "cnn_runs": 0.84,  # run-1 to run-3 only: the head is reported on its own
        "head_birdnet": 0.91,
        "clips": "256/64/80",
    }


def test_pretrained_members_are_reported_apart_with_no_published_figure(reports, tmp_path):
    table = run_report(reports, tmp_path)
    scratch, pretrained = table.split("## With pretrained embeddings (trained on outside data)")
    assert "head-birdnet" not in scratch.split("## The chosen ensemble")[0] and "every member" not in scratch
    assert "CC BY-NC-SA 4.0" in pretrained and "not comparable" in pretrained
    rows = {line.split(" | ")[0].strip("| "): line for line in pretrained.splitlines() if line.startswith("| ") and "---" not in line}
    assert rows["head-birdnet (linear head)"] == "| head-birdnet (linear head) | birdnet embedding | 91.0 % | 91.0 % | 90.0 % | – |"
    # Validation: the rows of the kind test scores, since the head predicts no others.
    assert (
        rows["ensemble of every member: swarm_jaya"]
        == "| ensemble of every member: swarm_jaya | spectrogram + embeddings | 93.0 % | 93.0 % | 89.0 % | – |"
    )
    assert "not every file" in pretrained
    assert not any(k.startswith("ensemble of the pretrained heads") for k in rows)  # one head: no ensemble of it


def test_the_report_shows_the_chosen_ensemble_its_classes_weights_and_figures(reports, tmp_path):
    text = run_report(reports, tmp_path)
    assert (
        "## The chosen ensemble: swarm_jaya, over every member" in text
        and "Least validation log-loss is `swarm_jaya` over every member" in text
    )
    assert "| dog | 2 | 1 | 50.0 % |" in text and "| rain | 2 | 2 | 100.0 % |" in text  # per-class accuracy
    assert (
        "| swarm_jaya | 0.400 | 0.100 | 0.200 | 0.300 | 0.1100 | 89.0 % |" in text
        and "| average |" not in text.split("## Ensemble weights")[1]
    )
    for figure in ("figures/confusion.png", "figures/learning_curves.png", "spectrogram_grid.png"):
        assert f"]({figure})" in text
    for png in ("confusion.png", "learning_curves.png"):
        assert (tmp_path / "figures" / png).read_bytes()[:4] == b"\x89PNG"


def test_another_corpus_gets_no_published_column(reports, tmp_path):
    """The study's figures are ESC-10's: beside a RAVDESS result they would compare apples with oranges."""
    (tmp_path / "corpus.json").write_text(json.dumps({"name": None, "layout": "filename", "classes": ["01", "02"]}))
    table = run_report(reports, tmp_path)
    assert "| Model | Input | Test, clips | Test, files | Validation |\n" in table and "Published" not in table
    assert "| knn_3 | 1D raw | 15.0 % | 11.0 % | 12.0 % |\n" in table and "81.06" not in table and "12.1 %" not in table


def test_a_missing_metrics_file_is_named(reports, tmp_path):
    (reports / "baselines" / "features.json").unlink()
    with pytest.raises(DataError, match=r"baselines/features\.json: missing; expected the model stages' metrics \(dvc repro\)"):
        run_report(reports, tmp_path)
    assert not (tmp_path / "results.md").exists()
