"""Typed configs reject unknown, missing, mistyped and nonsensical keys by name."""

import pytest

from audioclass.augmentation import AugmentConfig
from audioclass.clips import ExtractConfig
from audioclass.config import load_params, stage_config
from audioclass.errors import ConfigError
from audioclass.raw_vectors import RawVectorConfig
from audioclass.spectrograms import SpectrogramConfig
from audioclass.splits import SplitConfig
from conftest import PROJECT

STAGES = {
    "extract": ExtractConfig,
    "split": SplitConfig,
    "augment": AugmentConfig,
    "spectrograms": SpectrogramConfig,
    "raw_vectors": RawVectorConfig,
}


def params():
    return load_params(PROJECT / "params.yaml")


@pytest.mark.parametrize("section", STAGES)
def test_project_params_build_every_stage_config(section):
    cfg = stage_config(STAGES[section], params(), section)
    assert type(cfg) is STAGES[section]


@pytest.mark.parametrize(
    "section, change, message",
    [
        ("augment", {"copies": 0}, "augment.copies: expected an integer >= 1"),
        ("augment", {"copies": "20"}, "augment.copies: expected an integer, got '20'"),
        ("augment", {"colour": 1}, "augment.colour: unknown key"),
        ("augment", {"noise": {"p": 1.5, "max_fraction": 0.1}}, "augment.noise.p: expected a probability in [0, 1], got 1.5"),
        ("augment", {"noise": {"p": 0.5}}, "augment.noise.max_fraction: missing key"),
        ("augment", {"time_stretch": {"p": 0.5, "min_rate": 2.0, "max_rate": 1.5}}, "augment.time_stretch.min_rate"),
        ("split", {"strategy": "random"}, "split.strategy: expected one of ['folds', 'holdout'], got 'random'"),
        ("split", {"val_fraction": 1.2}, "split.val_fraction: expected a fraction in (0, 1)"),
        ("split", {"val_fold": 1}, "split.val_fold: expected a fold other than test_fold=1"),
        ("spectrograms", {"n_mels": 600}, "spectrograms.n_mels: expected at most n_fft // 2 + 1 = 513"),
        ("spectrograms", {"hop_length": 0}, "spectrograms.hop_length"),
        ("spectrograms", {"fmax": "high"}, "spectrograms.fmax: expected float or null, got 'high'"),
        ("spectrograms", {"test_copies": "some"}, "spectrograms.test_copies: expected one of ['original', 'all'], got 'some'"),
        (
            "raw_vectors",
            {"test_copies": "original only"},
            "raw_vectors.test_copies: expected one of ['original', 'all'], got 'original only'",
        ),
        ("extract", {"sample_rate": -1}, "extract.sample_rate: expected a rate in Hz"),
        ("extract", {"duration": True}, "extract.duration: expected a number, got True"),
    ],
)
def test_bad_params_name_the_key(section, change, message):
    raw = params()
    raw[section] = {**raw[section], **change}
    with pytest.raises(ConfigError) as err:
        stage_config(STAGES[section], raw, section)
    assert message in str(err.value)
    assert str(err.value).startswith("params.yaml: ")
    assert "\n" not in str(err.value)


def test_missing_key_and_missing_section():
    raw = params()
    del raw["split"]["seed"]
    with pytest.raises(ConfigError, match=r"split\.seed: missing key"):
        stage_config(SplitConfig, raw, "split")
    with pytest.raises(ConfigError, match="evaluate: missing section"):
        stage_config(SplitConfig, raw, "evaluate")


def test_unreadable_params_file(tmp_path):
    (tmp_path / "params.yaml").write_text("extract: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(tmp_path / "params.yaml")
    with pytest.raises(ConfigError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")
