"""The registered ensemble as a model server would run it: audio bytes or paths in, ``predict --json``'s results out."""

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from mlflow.exceptions import MlflowException

from audioclass.bundle import EnsemblePyfunc, recordings, signature
from audioclass.predict import InMemory, analyse_files
from conftest import BAND_RATE as RATE
from conftest import tone


@pytest.fixture
def model(band_ensemble):
    served = EnsemblePyfunc()
    served.ensemble = band_ensemble  # what load_context reads from the bundle
    return served


def test_audio_bytes_and_paths_get_what_predict_json_gives(tmp_path, model, band_ensemble):
    sf.write(tmp_path / "street.wav", np.concatenate([tone(300, 1.5, RATE), tone(3000, 1.5, RATE)]), RATE)
    sf.write(tmp_path / "clip.ogg", tone(3000, 0.4, RATE), RATE, format="OGG")
    frame = pd.DataFrame({"audio": [(tmp_path / "street.wav").read_bytes(), None], "path": [None, str(tmp_path / "clip.ogg")]})
    got = model.predict(None, frame, params={"hop": 0.25, "min_confidence": 0.0, "windows": True})
    expected = analyse_files([tmp_path / "street.wav", tmp_path / "clip.ogg"], band_ensemble, hop=0.25, windows=True)
    assert got == [expected[0] | {"file": "audio[0]"}, expected[1]]
    assert [d["class"] for d in got[0]["detections"]] == ["low", "high"] and got[1]["prediction"] == "high"
    unsure = model.predict(None, frame, params={"hop": 0.25, "min_confidence": 0.85, "windows": False})
    assert [d["class"] for d in unsure[0]["detections"]] == ["low"] and "windows" not in unsure[0]


@pytest.mark.parametrize(
    "frame, message",
    [
        (pd.DataFrame({"audio": [b"hello"]}), r"^1 of 1 rows not analysed; the first: audio\[0\]: cannot decode audio"),
        (pd.DataFrame({"audio": [b""]}), r"^1 of 1 rows not analysed; the first: audio\[0\]: no bytes; expected an audio file's content$"),
        (pd.DataFrame({"path": ["nowhere.wav"]}), r"^1 of 1 rows not analysed; the first: nowhere\.wav: no such file"),
        (pd.DataFrame({"path": ["a.wav"], "audio": [b"RIFF"]}), r"^row 0: expected a 'path' or an 'audio' value, got both$"),
        (pd.DataFrame({"path": [None]}), r"^row 0: expected a 'path' or an 'audio' value, got neither$"),
    ],
)
def test_a_row_that_is_not_audio_fails_the_request_with_one_line_naming_it(model, frame, message):
    with pytest.raises(MlflowException, match=message) as failed:
        model.predict(None, frame)
    assert failed.value.get_http_status_code() == 400 and "\n" not in failed.value.message


def test_rows_become_paths_or_bytes_in_order():
    frame = pd.DataFrame({"path": ["a.wav", np.nan], "audio": [None, b"RIFF"]})  # a JSON null arrives as NaN
    assert [type(r).__name__ for r in recordings(frame)] == ["PosixPath", "InMemory"]
    assert recordings(frame)[1] == InMemory("audio[1]", b"RIFF")


def test_the_signature_takes_a_path_or_audio_and_the_analysis_options_with_the_bundle_s_defaults():
    sig = signature(hop=2.5, min_confidence=0.72)
    assert sig.inputs.input_names() == ["path", "audio"] and sig.inputs.required_input_names() == []
    assert [t.name for t in sig.inputs.input_types()] == ["string", "binary"]
    assert {p.name: p.default for p in sig.params.params} == {"hop": 2.5, "min_confidence": 0.72, "windows": False}
