"""Stages killed part-way (SIGINT as from Ctrl-C, SIGKILL as from the OOM killer) leave no output, and a rerun
gives exactly what an uninterrupted run gives."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import PROJECT, band_spectrograms, tiny_clips, write_esc10_release, write_spectrogram_folder

SIGNALS = [pytest.param(signal.SIGINT, id="SIGINT"), pytest.param(signal.SIGKILL, id="SIGKILL")]


def files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def temporaries(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f".{out.name}.pid*.tmp"))


def stage(module: str, *args: str, params: Path) -> list[str]:
    return [sys.executable, "-m", f"audioclass.stages.{module}", *args, "--params", str(params)]


def run(command: list[str], cwd: Path) -> None:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]


def interrupt(command: list[str], cwd: Path, out: Path, sig: signal.Signals, started, grace: float = 0.0) -> None:
    """Start the stage, wait until ``started(tmp)`` says its work is under way (and ``grace`` seconds more),
    then signal its whole process group."""
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 300
    while not any(started(tmp) for tmp in temporaries(out)):
        assert process.poll() is None, f"the stage ended before it could be interrupted: {process.stderr.read().decode()[-2000:]}"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(grace)
    assert process.poll() is None, "the stage ended before it could be interrupted"
    os.killpg(process.pid, sig)  # like Ctrl-C in a terminal, which signals the stage and its workers
    process.wait(timeout=120)
    assert process.returncode != 0
    assert not out.exists()  # nothing half-written where DVC looks
    if sig == signal.SIGINT:
        assert temporaries(out) == []  # cleaned up on the way out
    else:
        assert len(temporaries(out)) == 1  # a killed process cannot clean up; the next writer does


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """Params and a prepared corpus big enough that the data stages run for a few seconds: 50 clips of 1 s at 8 kHz, 8 copies."""
    from audioclass.clips import ExtractConfig, extract
    from conftest import config

    root = tmp_path_factory.mktemp("interrupt")
    source = write_esc10_release(root / "ESC-10", tiny_clips(per_class=5, seconds=1.0))
    meta = extract(config(ExtractConfig, "extract", source=str(source), sample_rate=8000, duration=1.0), root / "prepared", jobs=1)
    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    params["augment"]["copies"] = 8
    params["spectrograms"].update(n_fft=256, hop_length=128, n_mels=32, preview_per_class=2)
    params["train"].update(
        runs={"run-1": {"seed": 1}},
        model={**params["train"]["model"], "width": 4, "depth": 2},
        fit={**params["train"]["fit"], "epochs": 60, "patience": 60, "batch_size": 16},
    )
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    from audioclass.splits import SplitConfig, split

    split(meta, config(SplitConfig, "split", val_fraction=0.34)).to_csv(root / "split.csv", index=False)
    return root


@pytest.fixture(scope="module")
def augmented(project):
    """The uninterrupted augmentation, as the reference."""
    run(stage("augment", "--prepared", "prepared", "--out", "reference-augmented", params=project / "params.yaml"), project)
    return project / "reference-augmented"


@pytest.mark.parametrize("sig", SIGNALS)
def test_interrupted_augmentation_reruns_to_identical_files(project, augmented, tmp_path, sig):
    out = tmp_path / "augmented"
    command = stage("augment", "--prepared", str(project / "prepared"), "--out", str(out), params=project / "params.yaml")
    interrupt(command, project, out, sig, started=lambda tmp: len(list(tmp.rglob("*.wav"))) >= 5)
    run(command, project)
    assert files(out) == files(augmented) and temporaries(out) == []


@pytest.mark.parametrize("sig", SIGNALS)
def test_interrupted_spectrograms_rerun_to_identical_arrays(project, augmented, tmp_path, sig):
    out = tmp_path / "spectrograms"
    command = stage(
        "spectrograms",
        "--augmented",
        str(augmented),
        "--split",
        str(project / "split.csv"),
        "--out",
        str(out),
        "--preview",
        str(tmp_path / "grid.png"),
        "--summary",
        str(tmp_path / "data.json"),
        params=project / "params.yaml",
    )
    interrupt(command, project, out, sig, started=lambda tmp: True)
    assert not (tmp_path / "data.json").exists()
    run(command, project)
    reference = tmp_path / "reference"
    run([*command[: command.index("--out") + 1], str(reference), *command[command.index("--out") + 2 :]], project)
    assert files(out) == files(reference) and temporaries(out) == []


def train_command(project: Path, data: Path, out: Path) -> list[str]:
    return stage(
        "train",
        "--run",
        "run-1",
        "--data",
        str(data),
        "--out",
        str(out),
        "--metrics",
        str(out.parent / f"{out.name}.json"),
        "--history",
        str(out.parent / f"{out.name}.csv"),
        params=project / "params.yaml",
    )


@pytest.fixture(scope="module")
def trained(project):
    """Band spectrograms and the uninterrupted run on them (60 epochs: several seconds to interrupt)."""
    data = write_spectrogram_folder(
        project / "bands", {"train": band_spectrograms(90, 4, 0), "val": band_spectrograms(30, 2, 1), "test": band_spectrograms(30, 2, 2)}
    )
    (project / ".dvc").mkdir()  # the folder is a project of its own: its MLflow store is project/mlflow.db
    run(train_command(project, data, project / "reference-run"), project)
    return data, project / "reference-run"


@pytest.mark.parametrize("sig", SIGNALS)
def test_interrupted_training_leaves_no_model_and_reruns_to_the_same_predictions(project, trained, tmp_path, sig):
    data, reference = trained
    out = tmp_path / "run-1"
    interrupt(train_command(project, data, out), project, out, sig, started=lambda tmp: True, grace=2.0)  # a few epochs in
    assert not (tmp_path / "run-1.json").exists()
    run(train_command(project, data, out), project)
    # Same seed, same machine: the same validation probabilities. Op determinism is on, so they agree
    # exactly in practice; the tolerance only allows for a different BLAS thread split.
    np.testing.assert_allclose(np.load(out / "val_probs.npy"), np.load(reference / "val_probs.npy"), atol=1e-6)
    assert temporaries(out) == []


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the swallowed interrupt, on purpose
@pytest.mark.parametrize("writer", ["atomic_dir", "atomic_file"])
def test_a_ctrl_c_lost_in_a_finaliser_still_keeps_the_output_from_appearing(tmp_path, monkeypatch, writer):
    """CPython prints and ignores a KeyboardInterrupt raised inside ``__del__``; the stage must not commit after it."""
    from audioclass import outputs
    from audioclass.cli import run_stage

    monkeypatch.setattr(outputs, "_interrupted", False)
    out, went_on = tmp_path / "out", []

    class Finaliser:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):  # the handler runs at the next bytecode boundary, in here
                pass

    def stage_main():
        with getattr(outputs, writer)(out) as tmp:
            (tmp / "part" if writer == "atomic_dir" else tmp).write_text("work")
            Finaliser()  # collected at once: the interrupt is raised and swallowed inside __del__
            went_on.append(True)

    previous = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit) as stopped:
            run_stage(stage_main)  # installs the stage's SIGINT handler
    finally:
        signal.signal(signal.SIGINT, previous)
    assert went_on == [True]  # the interrupt really was lost, and the work went on
    assert stopped.value.code == 130 and not out.exists() and list(tmp_path.iterdir()) == []
