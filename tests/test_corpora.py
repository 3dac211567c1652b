"""Corpora other than ESC-10: labels kept exactly as written, common layouts, silence, and the CLI around them."""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml

from audioclass import cli
from audioclass.augmentation import AugmentConfig, augment
from audioclass.clips import ExtractConfig, extract
from audioclass.errors import ConfigError, DataError
from audioclass.layouts import path_id
from audioclass.splits import SplitConfig, assign_splits, split
from audioclass.tables import json_text, read_table
from conftest import PROJECT, config, tone

RATE = 8000


def extract_cfg(source: Path, **overrides) -> ExtractConfig:
    return config(ExtractConfig, "extract", source=str(source), sample_rate=RATE, duration=0.5, **overrides)


def csv_column(path: Path, column: str) -> list[str]:
    """A column exactly as the file holds it: no pandas in between."""
    with path.open(newline="") as f:
        return [row[column] for row in csv.DictReader(f)]


def ravdess(root: Path) -> Path:
    """RAVDESS-style names: modality-channel-emotion-intensity-statement-repetition-actor, in actor folders."""
    for actor in range(1, 7):
        for emotion, freq in (("01", 300), ("03", 600), ("04", 900), ("05", 1200)):
            folder = root / f"Actor_{actor:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            sf.write(folder / f"03-01-{emotion}-01-01-01-{actor:02d}.wav", tone(freq, 0.4, RATE, seed=actor), RATE)
    return root


RAVDESS_PATTERN = r"^\d+-\d+-(?P<label>\d+)-\d+-\d+-\d+-(?P<group>\d+)$"


def test_zero_padded_labels_stay_text_through_extract_augment_split(tmp_path):
    source = ravdess(tmp_path / "RAVDESS")
    meta = extract(extract_cfg(source, layout="filename", label_pattern=RAVDESS_PATTERN, n_folds=3), tmp_path / "prepared", jobs=2)
    assert csv_column(tmp_path / "prepared/metadata.csv", "class_name")[:4] == ["01", "03", "04", "05"]
    assert sorted(set(csv_column(tmp_path / "prepared/metadata.csv", "source_id"))) == [f"{a:02d}" for a in range(1, 7)]
    assert json.loads((tmp_path / "prepared/corpus.json").read_text())["classes"] == ["01", "03", "04", "05"]
    assert meta["clip_id"].iloc[0] == "Actor_01%2F03-01-01-01-01-01-01"  # the path below the corpus, one file name
    read_back = read_table(tmp_path / "prepared/metadata.csv")
    augment(read_back, tmp_path / "prepared", config(AugmentConfig, "augment", copies=2), tmp_path / "augmented", jobs=2)
    assert set(csv_column(tmp_path / "augmented/manifest.csv", "class_name")) == {"01", "03", "04", "05"}
    assert set(csv_column(tmp_path / "augmented/manifest.csv", "source_id")) == {f"{a:02d}" for a in range(1, 7)}
    table = split(read_table(tmp_path / "prepared/metadata.csv"), config(SplitConfig, "split", val_fraction=0.5))
    assert (table.groupby("source_id")["split"].nunique() == 1).all()  # an actor never straddles two splits


@pytest.mark.parametrize("names", [["None", "007"], ["NA", "nan", "null", "01"]])
def test_class_folders_named_like_missing_values_or_numbers_stay_as_written(tmp_path, names):
    root = tmp_path / "corpus"
    for c, name in enumerate(names):
        (root / name).mkdir(parents=True)
        for i in range(3):
            sf.write(root / name / f"{i}.wav", tone(300 + 200 * c, 0.3, RATE, seed=i), RATE)
    extract(extract_cfg(root, n_folds=3), tmp_path / "prepared", jobs=1)
    assert sorted(set(csv_column(tmp_path / "prepared/metadata.csv", "class_name"))) == sorted(names)
    meta = read_table(tmp_path / "prepared/metadata.csv")
    assert sorted(set(meta["class_name"])) == sorted(names) and meta["label"].dtype == np.int64


def test_the_same_file_name_under_every_class_folder_is_one_clip_each(tmp_path):
    """Google's Speech Commands: yes/0a7c2a8d_nohash_0.wav beside no/0a7c2a8d_nohash_0.wav."""
    root = tmp_path / "speech_commands"
    for c, word in enumerate(("yes", "no", "up")):
        (root / word).mkdir(parents=True)
        for speaker in ("0a7c2a8d", "0b09edd3", "0c40e715"):
            sf.write(root / word / f"{speaker}_nohash_0.wav", tone(300 + 300 * c, 0.3, RATE), RATE)
    meta = extract(extract_cfg(root, n_folds=3), tmp_path / "prepared", jobs=2)
    assert len(meta) == 9 and meta["clip_id"].is_unique
    assert set(meta["clip_id"][meta["class_name"] == "no"]) == {
        "no%2F0a7c2a8d_nohash_0",
        "no%2F0b09edd3_nohash_0",
        "no%2F0c40e715_nohash_0",
    }
    assert sorted(p.name for p in (tmp_path / "prepared/clips").iterdir()) == sorted(f"{c}.wav" for c in meta["clip_id"])
    augment(meta, tmp_path / "prepared", config(AugmentConfig, "augment", copies=2), tmp_path / "augmented", jobs=1)
    assert len(list((tmp_path / "augmented/wav").iterdir())) == 18


def test_dated_file_names_are_not_read_as_esc_folds(tmp_path):
    root = tmp_path / "diary"
    for c, name in enumerate(("cat", "dog")):
        (root / name).mkdir(parents=True)
        for day in range(1, 7):
            sf.write(root / name / f"2023-01-{day:02d}.wav", tone(400 + 400 * c, 0.3, RATE, seed=day), RATE)
    meta = extract(extract_cfg(root, n_folds=3), tmp_path / "prepared", jobs=1)
    assert set(meta["fold"]) == {1, 2, 3}  # assigned, not 2023
    assert (meta["source_id"] == meta["clip_id"]).all() and meta["source_id"].is_unique  # each file its own recording
    assert list(meta["take"]) == [""] * 12


def test_path_ids_are_one_to_one_and_valid_file_names():
    paths = ["cat/000.wav", "cat%2F000.wav", "a b/c.wav", "a_b/c.wav", "Größe/Ä1.flac", "x/y/z.ogg", "x/y%2Fz.ogg", "a/b:c?.wav"]
    ids = [path_id(p) for p in paths]
    assert len(set(ids)) == len(ids)
    assert all("/" not in i and "\0" not in i and not i.startswith(".") for i in ids)
    assert ids[0] == "cat%2F000" and ids[4] == "Größe%2FÄ1" and ids[2] == "a%20b%2Fc"


def test_a_class_left_without_training_clips_is_an_error():
    rows = [(f"{fold}-{c}{s}-A", f"{c}{s}", c, f"class{c}", fold) for c in range(3) for s, fold in enumerate((1, 2, 3, 4, 5))]
    rows = [r for r in rows if r[2] != 2] + [(f"{f}-2{s}-A", f"2{s}", 2, "class2", f) for s, f in enumerate((1, 1, 2))]
    meta = pd.DataFrame(rows, columns=["clip_id", "source_id", "label", "class_name", "fold"])
    cfg = SplitConfig("folds", test_fold=1, val_fold=2, val_fraction=0.2, test_per_class=8, group_by_source=True, seed=0)
    with pytest.raises(DataError, match=r"^class 'class2': no training clips, every source recording of it is in validation or test"):
        assign_splits(meta, cfg)


def test_a_class_missing_from_test_is_a_warning_naming_it(caplog):
    rows = [(f"{fold}-{c}{s}-A", f"{c}{s}", c, f"class{c}", fold) for c in range(2) for s, fold in enumerate((1, 2, 3, 4, 5))]
    rows += [(f"{f}-2{s}-A", f"2{s}", 2, "class2", f) for s, f in enumerate((2, 3, 4))]
    meta = pd.DataFrame(rows, columns=["clip_id", "source_id", "label", "class_name", "fold"])
    cfg = SplitConfig("folds", test_fold=1, val_fold=2, val_fraction=0.2, test_per_class=8, group_by_source=True, seed=0)
    with caplog.at_level(logging.WARNING):
        splits = assign_splits(meta, cfg)
    assert (splits[meta["class_name"] == "class2"] != "test").all()
    assert "no test clips for class(es) ['class2']" in caplog.text


def test_silent_clips_are_named_once_each_with_a_count(tmp_path, caplog):
    root = tmp_path / "corpus"
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for i in range(3):
            sf.write(root / name / f"{i}.wav", tone(500, 0.3, RATE, seed=i), RATE)
    sf.write(root / "dog" / "quiet.wav", np.zeros(2400, np.float32), RATE)
    sf.write(root / "cat" / "hum.wav", np.full(2400, 0.4 / 32768, np.float32), RATE, subtype="FLOAT")  # rounds to zero in 16 bits
    with caplog.at_level(logging.WARNING):
        extract(extract_cfg(root, n_folds=2), tmp_path / "prepared", jobs=2)
    lines = [r.getMessage() for r in caplog.records]
    assert sum("quiet.wav: silent (peak -inf dBFS" in m for m in lines) == 1 and sum("hum.wav: silent" in m for m in lines) == 1
    assert "2 of 8 clips are silent" in caplog.text


def test_tables_keep_text_and_json_stays_valid(tmp_path):
    (tmp_path / "t.csv").write_text("clip_id,label,class_name,source_id,take\n007,0,None,01,\n1e3,1,NA,nan,A\n")
    table = read_table(tmp_path / "t.csv")
    assert list(table["clip_id"]) == ["007", "1e3"] and list(table["class_name"]) == ["None", "NA"]
    assert list(table["source_id"]) == ["01", "nan"] and list(table["take"]) == ["", "A"]
    text = json_text({"loss": math.nan, "runs": [1.0, math.inf], "name": "NA"})
    assert json.loads(text) == {"loss": None, "runs": [1.0, None], "name": "NA"}  # json.loads accepts NaN; check the text too
    assert "NaN" not in text and "Infinity" not in text


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
        raise SystemExit(0)
    out = capsys.readouterr()
    return exit_.value.code, out.out, out.err


def test_an_unknown_command_is_named_before_the_list(capsys):
    code, out, err = run_cli(["bogus"], capsys)
    assert code == 2 and err.splitlines()[0] == "error: unknown command 'bogus'" and "commands:" in err and out == ""
    code, out, _ = run_cli(["--help"], capsys)
    assert code == 0 and "commands:" in out


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_help_is_plain_prose(command, capsys):
    code, out, _ = run_cli([command, "--help"], capsys)
    assert code == 0 and out.startswith("usage: audioclass")
    for markup in (":mod:", ":func:", ":class:", "``", "METADATA_COLUMNS"):
        assert markup not in out, (command, markup)


def test_params_errors_name_the_file_that_was_read(tmp_path, capsys):
    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    params["split"]["test_fold"] = 9
    other = tmp_path / "experiment-7.yaml"
    other.write_text(yaml.safe_dump(params))
    metadata = tmp_path / "metadata.csv"
    rows = [(f"{i % 5 + 1}-{i}-A", str(i), "A", i % 5 + 1, i % 2, "cat" if i % 2 else "dog") for i in range(30)]
    pd.DataFrame(rows, columns=["clip_id", "source_id", "take", "fold", "label", "class_name"]).to_csv(metadata, index=False)
    code, _, err = run_cli(["split", "--params", str(other), "--metadata", str(metadata), "--out", str(tmp_path / "split.csv")], capsys)
    assert code == 1 and err.strip() == f"error: {other}: split.test_fold: expected one of the folds [1, 2, 3, 4, 5], got 9"


def test_check_stage_names_a_missing_source_and_a_misspelt_section(tmp_path, capsys):
    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    params["extract"]["source"] = str(tmp_path / "ESC-1")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    argv = ["check", "--params", str(tmp_path / "params.yaml"), "--out", str(tmp_path / "source.json")]
    code, _, err = run_cli(argv, capsys)
    assert code == 1 and err.startswith(f"error: {tmp_path / 'params.yaml'}: extract.source: {tmp_path / 'ESC-1'} not found; expected")
    (tmp_path / "ESC-1").mkdir()
    params["spectrogram"] = params.pop("spectrograms")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    code, _, err = run_cli(argv, capsys)
    assert code == 1 and "spectrogram: unknown section; did you mean 'spectrograms'?" in err
    assert not (tmp_path / "source.json").exists()
    params["spectrograms"] = params.pop("spectrogram")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert run_cli(argv, capsys)[0] == 0
    assert json.loads((tmp_path / "source.json").read_text()) == {"source": str(tmp_path / "ESC-1"), "kind": "folder"}


def test_extract_config_rejects_a_filename_layout_without_a_pattern():
    with pytest.raises(ConfigError, match=r"^label_pattern: expected a regex with a named group \(\?P<label>…\) for layout: filename"):
        config(ExtractConfig, "extract", layout="filename", label_pattern=None)


class FakeMember:
    """Stands in for a Keras model: uniform probabilities over its classes, and the input shape it was built for."""

    def __init__(self, input_shape: tuple, n_classes: int):
        self.input_shape, self.n_classes = (None, *input_shape), n_classes

    def __call__(self, x, training=False):
        return np.full((len(x), self.n_classes), 1 / self.n_classes, np.float32)


def test_predict_marks_silence_and_skips_hidden_files(tmp_path):
    from audioclass.predict import Ensemble, Member, analyse_files, audio_files, model_input
    from audioclass.spectrograms import SpectrogramConfig

    extract_config = extract_cfg(tmp_path)
    spectrograms = config(SpectrogramConfig, "spectrograms", n_fft=256, hop_length=64, n_mels=16)
    probe = Ensemble([], "average", None, ["01", "02"], extract_config, spectrograms)
    shape = model_input(np.zeros(4000, np.float32), RATE, probe).shape
    ensemble = Ensemble([Member("run-1", keras=FakeMember(shape, 2))], "average", None, ["01", "02"], extract_config, spectrograms)
    folder = tmp_path / "new"
    folder.mkdir()
    sf.write(folder / "bark.wav", tone(500, 0.5, RATE), RATE)
    sf.write(folder / "empty-room.wav", np.zeros(4000, np.float32), RATE)
    for hidden in (".bark.wav", "._bark.wav"):
        (folder / hidden).write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # macOS resource forks: not audio
    paths = audio_files([folder])
    assert [p.name for p in paths] == ["bark.wav", "empty-room.wav"]
    bark, silent = analyse_files(paths, ensemble, hop=extract_config.duration / 2)
    assert bark["prediction"] in ("01", "02") and isinstance(bark["prediction"], str)
    assert bark["detections"] == [{"start": 0.0, "end": 0.5, "class": bark["prediction"], "confidence": bark["probability"]}]
    assert silent == {"file": str(folder / "empty-room.wav"), "silent": True, "prediction": None, "min_confidence": 0.0, "detections": []}
    assert json.loads(json_text(silent, indent=None))["prediction"] is None
