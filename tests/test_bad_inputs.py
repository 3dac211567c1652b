"""The bad-input corpus: each odd input, fed to the stage that meets it through the real command line.

An input ends one of two ways:

- **rejected**: exit 1, exactly one ``error:`` line naming the file or key and what
  was expected, no traceback, no temporary left, the stage's previous output and
  the user's source files untouched;
- **handled**: odd but legitimate audio (too short, too long, stereo at another
  rate) becomes a clip of the configured rate and length, as
  docs/guarantees.md documents.
"""

from __future__ import annotations

import hashlib
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml

from audioclass import cli
from conftest import PROJECT, tiny_clips, tone, write_esc10_release, write_esc50_master, write_folders

RATE, SECONDS = 8000, 0.5  # every corpus is extracted to 0.5 s at 8 kHz


@dataclass(frozen=True)
class Case:
    """A stage command, the output folder it must leave as it was, and the sources it must not touch."""

    argv: list[str]
    out: Path
    sources: list[Path]


def params_file(folder: Path, **sections: dict) -> Path:
    """The project's params.yaml with some keys of some sections replaced."""
    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    params["extract"].update(sample_rate=RATE, duration=SECONDS)
    for section, change in sections.items():
        params[section].update(change)
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def extract_case(tmp: Path, source: Path, **extract: object) -> Case:
    params = params_file(tmp, extract={"source": str(source), **extract})
    return Case(["extract", "--params", str(params), "--out", str(tmp / "prepared"), "--jobs", "2"], tmp / "prepared", [source])


def esc10(tmp: Path) -> Path:
    return write_esc10_release(tmp / "ESC-10", tiny_clips())


def esc50(tmp: Path) -> Path:
    return write_esc50_master(tmp / "ESC-50-master", tiny_clips())


def one_clip(root: Path, suffix: str) -> Path:
    return sorted(root.rglob(f"*{suffix}"))[0]


def folders(tmp: Path, odd: Callable[[Path], None]) -> Path:
    """Two classes of 5 tones as folders (enough for 5 grouped folds); ``odd`` then changes or adds a file in ``dog/``."""
    root = write_folders(
        tmp / "corpus",
        {"dog": [tone(300, 0.6, RATE, seed=i) for i in range(5)], "cat": [tone(900, 0.6, RATE, seed=i) for i in range(5)]},
        RATE,
    )
    odd(root / "dog")
    return root


def corrupt_ogg(tmp):
    source = esc10(tmp)
    clip = one_clip(source, ".ogg")
    clip.write_bytes(b"OggS" + bytes(200))
    return extract_case(tmp, source), f"{clip.name}: cannot decode audio"


def truncated_ogg(tmp):
    source = esc10(tmp)
    clip = one_clip(source, ".ogg")
    clip.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    return extract_case(tmp, source), f"{clip.name}: "  # "file is truncated" or "cannot decode", by where the cut falls


def corrupt_wav(tmp):
    source = folders(tmp, lambda dog: (dog / "dog_0.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(40)))
    return extract_case(tmp, source, layout="folders"), "dog_0.wav: cannot decode audio"


def zero_length_file(tmp):
    source = folders(tmp, lambda dog: (dog / "dog_0.wav").write_bytes(b""))
    return extract_case(tmp, source, layout="folders"), "dog_0.wav: file is empty"


def text_named_wav(tmp):
    source = folders(tmp, lambda dog: (dog / "notes.wav").write_text("meeting notes, not audio\n" * 20))
    return extract_case(tmp, source, layout="folders"), "notes.wav: cannot decode audio"


def nonfinite(value: float):
    def case(tmp):
        y = tone(300, 0.6, RATE)
        y[100] = value
        source = folders(tmp, lambda dog: sf.write(dog / "dog_0.wav", y, RATE, subtype="FLOAT"))
        return extract_case(tmp, source, layout="folders"), "dog_0.wav: contains NaN or infinite samples"

    return case


def missing_class_folder(tmp):
    source = esc10(tmp)
    shutil.rmtree(source / "002 - Rain")
    return extract_case(tmp, source), "ESC-10 class folders missing for ['rain']"


def duplicate_clip_id(tmp):
    source = esc10(tmp)
    clip = one_clip(source / "001 - Dog bark", ".ogg")
    shutil.copy(clip, source / "002 - Rain" / clip.name)
    return extract_case(tmp, source), f"duplicate clip id '{clip.stem}'"


def esc50_missing_column(tmp):
    source = esc50(tmp)
    pd.read_csv(source / "meta/esc50.csv").drop(columns="src_file").to_csv(source / "meta/esc50.csv", index=False)
    return extract_case(tmp, source), "esc50.csv: missing column(s) ['src_file']"


def esc50_esc10_not_boolean(tmp):
    source = esc50(tmp)
    table = pd.read_csv(source / "meta/esc50.csv")
    table["esc10"] = table["esc10"].map({True: "yes", False: "no"})
    table.to_csv(source / "meta/esc50.csv", index=False)
    return extract_case(tmp, source), "column esc10: expected True or False, got 'yes'"


def zip_that_is_not_a_zip(tmp):
    fake = tmp / "ESC-50-master.zip"
    fake.write_bytes(b"<html>404 Not Found</html>")
    return extract_case(tmp, fake), "ESC-50-master.zip: not a zip archive"


def zip_missing_audio(tmp):
    source = esc50(tmp)
    archive = tmp / "ESC-50-master.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for path in sorted(source.rglob("*")):
            if path.is_file() and path.name != "1-100-A-10.wav":
                z.write(path, Path("ESC-50-master") / path.relative_to(source))
    return extract_case(tmp, archive), "1-100-A-10.wav: listed in ESC-50-master/meta/esc50.csv but missing"


def unknown_layout(tmp):
    return extract_case(tmp, esc10(tmp), layout="by_class"), "extract.layout: expected one of"


def filename_corpus(tmp: Path, label_pattern: str) -> Case:
    return extract_case(tmp, folders(tmp, lambda dog: None), layout="filename", label_pattern=label_pattern)


def bad_regex(tmp):
    return filename_corpus(tmp, "^(?P<label>[a-z+)_"), "extract.label_pattern: expected a valid regular expression"


def regex_without_label(tmp):
    return filename_corpus(tmp, "^(?P<animal>[a-z]+)_"), "extract.label_pattern: expected a regex with a named group (?P<label>…)"


def misspelt_section(tmp):
    case, _ = augment_param({"copies": 2}, "")(tmp)
    params = yaml.safe_load(Path(case.argv[2]).read_text())
    params["augmnet"] = params["augment"]
    Path(case.argv[2]).write_text(yaml.safe_dump(params))
    return case, "augmnet: unknown section; did you mean 'augment'?"


def one_recording_class(tmp):
    params = params_file(tmp)
    rows = [(f"c{i}", f"s{i}", "", i % 5 + 1, i % 2, "cat" if i % 2 else "dog") for i in range(20)]
    rows.append(("lonely-0", "lonely-0", "", 1, 2, "lonely"))
    metadata = tmp / "prepared" / "metadata.csv"
    metadata.parent.mkdir()
    pd.DataFrame(rows, columns=["clip_id", "source_id", "take", "fold", "label", "class_name"]).to_csv(metadata, index=False)
    return Case(
        ["split", "--params", str(params), "--metadata", str(metadata), "--out", str(tmp / "split.csv")], tmp / "split.csv", [metadata]
    ), "class 'lonely': 1 clip(s) from 1 source recording(s); expected at least 3"


def augment_param(change: dict, message: str):
    def case(tmp):
        params = params_file(tmp, augment=change)
        prepared = tmp / "prepared"
        write_esc10_release(prepared, tiny_clips(per_class=1))  # any inputs: the params are checked first
        return Case(
            ["augment", "--params", str(params), "--prepared", str(prepared), "--out", str(tmp / "augmented")],
            tmp / "augmented",
            [prepared],
        ), message

    return case


def too_many_mels(tmp):
    params = params_file(tmp, spectrograms={"n_fft": 256, "hop_length": 128, "n_mels": 200})
    return Case(
        [
            "spectrograms",
            "--params",
            str(params),
            "--augmented",
            str(tmp / "augmented"),
            "--split",
            str(tmp / "split.csv"),
            "--out",
            str(tmp / "spectrograms"),
            "--preview",
            str(tmp / "grid.png"),
            "--summary",
            str(tmp / "data.json"),
        ],
        tmp / "spectrograms",
        [],
    ), "spectrograms.n_mels: expected at most n_fft // 2 + 1 = 129 bands for n_fft=256, got 200"


def unknown_architecture(tmp):
    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    params = params_file(tmp, train={"model": {**params["train"]["model"], "architecture": "resnet9000"}})
    return Case(
        [
            "train",
            "--params",
            str(params),
            "--run",
            "run-1",
            "--data",
            str(tmp / "spectrograms"),
            "--out",
            str(tmp / "run-1"),
            "--metrics",
            str(tmp / "run-1.json"),
            "--history",
            str(tmp / "run-1.csv"),
        ],
        tmp / "run-1",
        [],
    ), "train.model.architecture: expected one of ['book_cnn', 'compact_cnn', 'crnn', 'transformer'], got 'resnet9000'"


def unknown_run_architecture(tmp):
    params = params_file(tmp, train={"runs": {"run-1": {"seed": 1}, "gru-1": {"seed": 1, "model": {"architecture": "gru"}}}})
    return Case(
        ["train", "--params", str(params), "--run", "run-1", "--data", str(tmp / "spectrograms"), "--out", str(tmp / "run-1")]
        + ["--metrics", str(tmp / "run-1.json"), "--history", str(tmp / "run-1.csv")],
        tmp / "run-1",
        [],
    ), "train.runs.gru-1.model.architecture: expected one of ['book_cnn', 'compact_cnn', 'crnn', 'transformer'], got 'gru'"


def unknown_swarm(tmp):
    params = params_file(tmp, ensemble={"optimisers": ["jaya", "pso9000"]})
    return Case(
        [
            "ensemble",
            "--params",
            str(params),
            "--models",
            str(tmp / "models"),
            "--data",
            str(tmp / "spectrograms"),
            "--out",
            str(tmp / "ensemble"),
        ],
        tmp / "ensemble",
        [],
    ), "ensemble.optimisers: expected names from"


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def truncated_spectrograms(tmp):
    from conftest import band_spectrograms, write_spectrogram_folder

    data = write_spectrogram_folder(
        tmp / "spectrograms", {"train": band_spectrograms(6, 2, 0), "val": band_spectrograms(3, 2, 1), "test": band_spectrograms(3, 2, 2)}
    )
    truncate(data / "train" / "x.npy")
    params = params_file(tmp, train={"runs": {"run-1": {"seed": 1}}})
    return Case(
        [
            "train",
            "--params",
            str(params),
            "--run",
            "run-1",
            "--data",
            str(data),
            "--out",
            str(tmp / "run-1"),
            "--metrics",
            str(tmp / "run-1.json"),
            "--history",
            str(tmp / "run-1.csv"),
        ],
        tmp / "run-1",
        [data],
    ), "train/x.npy: unreadable NumPy array"


def truncated_predictions(tmp):
    from conftest import band_spectrograms, write_spectrogram_folder

    data = write_spectrogram_folder(tmp / "spectrograms", {"val": band_spectrograms(3, 2, 1), "test": band_spectrograms(3, 2, 2)})
    for seed in (1, 2):
        run = tmp / "models" / f"run-{seed}"
        run.mkdir(parents=True)
        for split in ("val", "test"):
            np.save(run / f"{split}_probs.npy", np.full((6, 3), 1 / 3, np.float32))
        (run / "metrics.json").write_text('{"val_file_accuracy": 0.5, "class_names": ["class0", "class1", "class2"]}')
    truncate(tmp / "models" / "run-2" / "val_probs.npy")
    params = params_file(tmp, train={"runs": {"run-1": {"seed": 1}, "run-2": {"seed": 2}}})
    return Case(
        ["ensemble", "--params", str(params), "--models", str(tmp / "models"), "--data", str(data), "--out", str(tmp / "ensemble")],
        tmp / "ensemble",
        [tmp / "models", data],
    ), "run-2/val_probs.npy: unreadable NumPy array"


REJECTED = {
    "corrupt Ogg": corrupt_ogg,
    "truncated Ogg": truncated_ogg,
    "corrupt WAV": corrupt_wav,
    "zero-length file": zero_length_file,
    "text file named .wav": text_named_wav,
    "NaN samples": nonfinite(np.nan),
    "infinite samples": nonfinite(np.inf),
    "missing class folder": missing_class_folder,
    "duplicate clip id": duplicate_clip_id,
    "esc50.csv missing a column": esc50_missing_column,
    "esc10 column not boolean": esc50_esc10_not_boolean,
    "zip that is not a zip": zip_that_is_not_a_zip,
    "zip missing a listed file": zip_missing_audio,
    "unknown layout": unknown_layout,
    "label_pattern not a regex": bad_regex,
    "label_pattern without a label group": regex_without_label,
    "misspelt params section": misspelt_section,
    "class with one recording": one_recording_class,
    "0 copies": augment_param({"copies": 0}, "augment.copies: expected an integer >= 1 (1 = originals only), got 0"),
    "probability outside [0, 1]": augment_param(
        {"noise": {"p": 1.5, "max_fraction": 0.1}}, "augment.noise.p: expected a probability in [0, 1], got 1.5"
    ),
    "n_mels too large for n_fft": too_many_mels,
    "unknown architecture": unknown_architecture,
    "unknown architecture of a run": unknown_run_architecture,
    "unknown swarm algorithm": unknown_swarm,
    "truncated spectrogram array": truncated_spectrograms,
    "truncated run predictions": truncated_predictions,
}


def snapshot(paths: list[Path]) -> dict[str, str]:
    files = [p for root in paths for p in ([root] if root.is_file() else sorted(root.rglob("*"))) if p.is_file()]
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
        raise SystemExit(0)  # a stage that returns normally exits 0
    return exit_.value.code, capsys.readouterr().err


@pytest.mark.parametrize("make", REJECTED.values(), ids=REJECTED.keys())
def test_bad_input_is_rejected_with_one_line_and_nothing_lost(make, tmp_path, capsys):
    case, expected = make(tmp_path)
    case.out.mkdir(parents=True)
    (case.out / "previous-output.txt").write_text("from an earlier, successful run")
    before = snapshot([*case.sources, case.out])
    code, stderr = run_cli(case.argv, capsys)
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert code == 1 and len(errors) == 1, stderr
    assert expected in errors[0] and "expected" in errors[0] and "Traceback" not in stderr, errors[0]
    assert snapshot([*case.sources, case.out]) == before  # the previous output and the user's files are as they were
    assert not list(case.out.parent.glob(f".{case.out.name}.*")), "a temporary was left behind"


def three_broken_files(dog: Path) -> None:
    """A scraped corpus's usual damage: two empty WAVs and a text file named ``.ogg``."""
    (dog / "dog_1.wav").write_bytes(b"")
    (dog / "dog_3.wav").write_bytes(b"")
    (dog / "notes.ogg").write_text("meeting notes, not audio\n" * 20)


def test_one_run_names_every_unreadable_file_and_writes_nothing(tmp_path, capsys, caplog):
    source = folders(tmp_path, three_broken_files)
    case = extract_case(tmp_path, source, layout="folders")
    code, stderr = run_cli(case.argv, capsys)
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert code == 1 and len(errors) == 1 and "3 of 11 files cannot be read" in errors[0] and "on_error: skip" in errors[0], stderr
    for name, why in (("dog_1.wav", "file is empty"), ("dog_3.wav", "file is empty"), ("notes.ogg", "cannot decode audio")):
        assert f"{name}: {why}" in caplog.text
    assert not case.out.exists() and not list(tmp_path.glob(".prepared.*"))


def test_on_error_skip_leaves_the_unreadable_files_out_and_lists_them(tmp_path, capsys):
    source = folders(tmp_path, three_broken_files)
    case = extract_case(tmp_path, source, layout="folders", on_error="skip")
    code, stderr = run_cli(case.argv, capsys)
    assert code == 0, stderr
    meta = pd.read_csv(case.out / "metadata.csv")
    assert len(meta) == 8 and not set(meta["original_path"]) & {"dog/dog_1.wav", "dog/dog_3.wav", "dog/notes.ogg"}
    assert sorted(p.stem for p in (case.out / "clips").iterdir()) == sorted(meta["clip_id"])
    skipped = pd.read_csv(case.out / "skipped.csv")
    assert list(skipped["file"].str.rsplit("/", n=1).str[-1]) == ["dog_1.wav", "dog_3.wav", "notes.ogg"]
    assert list(skipped["error"].str.contains("cannot decode audio")) == [False, False, True]
    assert set(meta["fold"]) == {1, 2, 3, 4, 5}  # folds are assigned over the files that remain


def test_on_error_skip_refuses_to_leave_a_class_empty(tmp_path, capsys):
    def all_broken(dog: Path) -> None:
        for wav in dog.glob("*.wav"):
            wav.write_bytes(b"")

    case = extract_case(tmp_path, folders(tmp_path, all_broken), layout="folders", on_error="skip")
    code, stderr = run_cli(case.argv, capsys)
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert code == 1 and len(errors) == 1 and "no readable file in class 'dog'" in errors[0], stderr
    assert not case.out.exists()


HANDLED = {
    # name: (file written into class "dog", what the extracted clip must equal)
    "0.2 s clip: zero-padded to 0.5 s": (
        lambda path: sf.write(path, tone(300, 0.2, RATE), RATE),
        lambda y: np.abs(y[: int(0.2 * RATE)]).max() > 0.1 and not y[int(0.2 * RATE) + 1 :].any(),
    ),
    "60 s clip: its first 0.5 s kept": (
        lambda path: sf.write(path, tone(300, 60.0, RATE), RATE),
        lambda y: np.abs(y - tone(300, SECONDS, RATE)).max() < 1e-3,
    ),
    "stereo 48 kHz: averaged to mono, resampled to 8 kHz": (
        lambda path: sf.write(path, np.stack([tone(300, 1.0, 48000), -tone(300, 1.0, 48000, seed=1)], axis=1), 48000),
        lambda y: np.abs(y).max() < 0.1,
    ),  # the channels cancel, but for the noise
}


@pytest.mark.parametrize("write, check", HANDLED.values(), ids=HANDLED.keys())
def test_odd_but_valid_audio_becomes_a_clip_of_the_configured_shape(write, check, tmp_path, capsys):
    source = folders(tmp_path, lambda dog: write(dog / "odd.wav"))
    case = extract_case(tmp_path, source, layout="folders")
    code, stderr = run_cli(case.argv, capsys)
    assert code == 0, stderr
    meta = pd.read_csv(case.out / "metadata.csv")
    (odd,) = meta.loc[meta["original_path"].str.endswith("odd.wav"), "clip_id"]
    y, sr = sf.read(case.out / "clips" / f"{odd}.wav", dtype="float32")
    assert sr == RATE and y.shape == (int(SECONDS * RATE),)
    assert check(y)


@pytest.mark.parametrize(
    "stage, inputs",
    [
        ("split", ["--metadata", "{tmp}/prepared/metadata.csv", "--out", "{tmp}/split.csv"]),
        ("spectrograms", ["--augmented", "{tmp}/a", "--split", "{tmp}/s", "--out", "{tmp}/o", "--preview", "{tmp}/p", "--summary", "j"]),
        ("ensemble", ["--models", "{tmp}/models", "--data", "{tmp}/spectrograms", "--out", "{tmp}/ensemble"]),
    ],
)
def test_a_stage_run_by_hand_on_a_missing_input_says_so_in_one_line(stage, inputs, tmp_path, capsys):
    argv = [stage, "--params", str(PROJECT / "params.yaml"), *(arg.format(tmp=tmp_path) for arg in inputs)]
    code, stderr = run_cli(argv, capsys)
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert code == 1 and len(errors) == 1 and "Traceback" not in stderr, stderr
    assert str(tmp_path) in errors[0] and ("no such file or folder" in errors[0] or ": missing; expected" in errors[0])
    assert list(tmp_path.iterdir()) == []  # nothing written
