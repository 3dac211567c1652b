"""Long recordings: read a window at a time, classified window by window, and told as a timeline of detections."""

import dataclasses
import json

import numpy as np
import pytest
import soundfile as sf

from audioclass import audio
from audioclass.errors import DataError
from audioclass.predict import _print_result, analyse_files, detections
from audioclass.tables import json_text
from conftest import BAND_RATE as RATE
from conftest import tone


@pytest.mark.parametrize(
    "n, window, hop, starts",
    [
        (500, 1000, 250, [0]),  # shorter than a window: one window, padded as extract pads
        (1000, 1000, 250, [0]),
        (1010, 1000, 250, [0]),  # up to 1 % over a window is still one clip (ESC's Ogg clips decode to 5.001 s)
        (1011, 1000, 250, [0, 11]),
        (2000, 1000, 500, [0, 500, 1000]),  # windows fit exactly
        (2300, 1000, 500, [0, 500, 1000, 1300]),  # the last window ends at the file's end
        (3000, 1000, 1500, [0, 1500, 2000]),  # a hop longer than a window leaves gaps, and still ends at the end
    ],
)
def test_windows_start_hop_apart_and_the_last_ends_at_the_end(n, window, hop, starts):
    assert audio.window_starts(n, window, hop) == starts


def test_a_recording_is_read_a_window_at_a_time_each_window_as_read_whole(tmp_path, monkeypatch):
    y = np.random.default_rng(0).uniform(-0.5, 0.5, RATE * 3 + 123).astype(np.float32)
    sf.write(tmp_path / "long.wav", np.stack([y, -y / 2], axis=1), RATE, subtype="FLOAT")  # stereo: mixed to mono
    whole, _ = audio.read_audio(tmp_path / "long.wav")
    asked: list[int] = []
    read = sf.SoundFile.read
    monkeypatch.setattr(sf.SoundFile, "read", lambda self, frames=-1, **kw: asked.append(frames) or read(self, frames, **kw))
    windows = list(audio.read_windows(tmp_path / "long.wav", 1.0, 0.5))
    assert asked and all(0 < frames <= RATE for frames in asked)  # never the whole file
    assert len(list(audio.read_windows(tmp_path / "long.wav", 3.0, 1.0))) == 1  # 3.015 s: one 3 s clip
    assert [(start, end) for start, end, _, _ in windows] == [
        (0.0, 1.0),
        (0.5, 1.5),
        (1.0, 2.0),
        (1.5, 2.5),
        (2.0, 3.0),
        (2.015375, 3.015375),
    ]
    for start, _, samples, sr in windows:
        first = round(start * sr)
        assert sr == RATE and np.array_equal(samples, whole[first : first + RATE])


def test_a_window_of_bad_audio_fails_as_a_whole_file_does(tmp_path):
    y = np.zeros(RATE * 2, np.float32)
    y[RATE + 10] = np.nan
    sf.write(tmp_path / "nan.wav", y, RATE, subtype="FLOAT")
    (tmp_path / "text.wav").write_text("not audio")
    for name in ("nan.wav", "text.wav"):
        with pytest.raises(DataError) as whole:
            audio.read_audio(tmp_path / name)
        with pytest.raises(DataError) as windowed:
            list(audio.read_windows(tmp_path / name, 0.5, 0.25))
        assert str(windowed.value) == str(whole.value)


def probs(*rows):
    return [None if r is None else np.array(r, np.float32) for r in rows]


def test_windows_of_one_class_merge_and_silence_or_another_class_ends_a_detection():
    spans = [(0.0, 1.0), (0.5, 1.5), (1.0, 2.0), (1.5, 2.5), (2.0, 3.0), (2.5, 3.5), (5.0, 6.0)]
    rows = probs([0.9, 0.1], [0.6, 0.4], [0.2, 0.8], None, [0.3, 0.7], [0.1, 0.9], [0.05, 0.95])
    assert detections(spans, rows, ["dog", "rain"]) == [
        {"start": 0.0, "end": 1.5, "class": "dog", "confidence": 0.9},  # the highest of its windows
        {"start": 1.0, "end": 2.0, "class": "rain", "confidence": 0.8},
        {"start": 2.0, "end": 3.5, "class": "rain", "confidence": 0.9},  # after silence, a new detection
        {"start": 5.0, "end": 6.0, "class": "rain", "confidence": 0.95},  # not touching: apart
    ]


def test_a_window_below_the_minimum_confidence_has_no_class_and_joins_nothing_it_does_not_touch():
    spans = [(0.0, 1.0), (0.5, 1.5), (1.0, 2.0), (1.5, 2.5), (2.0, 3.0), (2.5, 3.5), (3.0, 4.0)]
    rows = probs([0.9, 0.1], [0.6, 0.4], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.55, 0.45], [0.9, 0.1])
    assert detections(spans, rows, ["dog", "rain"], min_confidence=0.65) == [
        {"start": 0.0, "end": 2.0, "class": "dog", "confidence": 0.9},  # its windows touch across the unsure one
        {"start": 1.5, "end": 2.5, "class": "rain", "confidence": 0.7},
        {"start": 3.0, "end": 4.0, "class": "dog", "confidence": 0.9},  # 2.0 to 3.0 has no sure window: apart
    ]
    assert detections(spans, rows, ["dog", "rain"], min_confidence=0.95) == []


def test_a_long_recording_becomes_a_timeline_of_what_sounds_when(tmp_path, band_ensemble, capsys):
    recording = np.concatenate([tone(300, 1.5, RATE), np.zeros(RATE // 2, np.float32), tone(3000, 1.5, RATE)])
    sf.write(tmp_path / "street.wav", recording, RATE)
    sf.write(tmp_path / "clip.wav", tone(300, 0.4, RATE), RATE)
    (tmp_path / "broken.wav").write_bytes(b"RIFF")
    street, broken, clip = analyse_files(
        [tmp_path / "street.wav", tmp_path / "broken.wav", tmp_path / "clip.wav"], band_ensemble, hop=0.25, windows=True, batch=4
    )
    assert street["duration"] == 3.5 and street["windows_analysed"] == 13 and street["hop"] == 0.25
    first, second = street["detections"]
    assert (first["class"], first["start"], second["class"], second["end"]) == ("low", 0.0, "high", 3.5)
    assert 1.25 <= first["end"] <= 1.75 <= second["start"] + 0.25 and first["confidence"] == 0.9
    assert [w["start"] for w in street["windows"]] == [0.25 * k for k in range(13)]
    assert {"start": 1.5, "end": 2.0, "silent": True} in street["windows"]  # the gap between the sounds has no class
    assert "cannot decode audio" in broken["error"] and set(broken) == {"file", "error"}
    assert clip["prediction"] == "low" and clip["detections"] == [{"start": 0.0, "end": 0.4, "class": "low", "confidence": 0.9}]
    assert json.loads(json_text(street, indent=None)) == street
    _print_result(street, top=3)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{tmp_path / 'street.wav'}: 3.5 s, 13 windows 0.25 s apart, minimum confidence 0.0 %"
    assert lines[1].split() == ["0.0", "–", f"{first['end']:.1f}", "s", "low", "(90.0", "%)"] and lines[2].split()[-3:] == [
        "high",
        "(80.0",
        "%)",
    ]


def test_a_ten_minute_recording_is_analysed_in_the_memory_of_a_few_windows(tmp_path, band_ensemble):
    import tracemalloc

    minutes = 10
    with sf.SoundFile(tmp_path / "ten-minutes.wav", "w", samplerate=RATE, channels=1, subtype="PCM_16") as out:
        for minute in range(minutes):  # written a minute at a time: the test itself never holds the whole file
            out.write(tone(300 if minute % 2 else 3000, 60.0, RATE, seed=minute))
    whole_decoded = minutes * 60 * RATE * 4  # bytes of the file as float32: 19 MB
    tracemalloc.start()
    try:
        [result] = analyse_files([tmp_path / "ten-minutes.wav"], band_ensemble, hop=0.5)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result["duration"] == minutes * 60 and result["windows_analysed"] == minutes * 120
    assert [d["class"] for d in result["detections"]] == ["high", "low"] * (minutes // 2)  # a detection per minute
    assert peak < whole_decoded / 8, f"peak {peak / 1e6:.1f} MB"  # windows and a batch, never the recording


def test_batches_do_not_change_a_window_s_probabilities(tmp_path, band_ensemble):
    sf.write(tmp_path / "a.wav", np.concatenate([tone(300, 1.0, RATE), tone(3000, 1.2, RATE)]), RATE)
    sf.write(tmp_path / "b.wav", tone(3000, 0.9, RATE), RATE)
    paths = [tmp_path / "a.wav", tmp_path / "b.wav"]
    assert analyse_files(paths, band_ensemble, hop=0.2, windows=True, batch=1) == analyse_files(
        paths, band_ensemble, hop=0.2, windows=True, batch=64
    )


def test_the_minimum_confidence_drops_unsure_windows_and_marks_an_unsure_clip(tmp_path, band_ensemble, capsys):
    sf.write(tmp_path / "street.wav", np.concatenate([tone(300, 1.5, RATE), tone(3000, 1.5, RATE)]), RATE)
    sf.write(tmp_path / "clip.wav", tone(3000, 0.4, RATE), RATE)
    street, clip = analyse_files([tmp_path / "street.wav", tmp_path / "clip.wav"], band_ensemble, hop=0.25, min_confidence=0.85)
    assert [d["class"] for d in street["detections"]] == ["low"] and street["min_confidence"] == 0.85  # 'high' windows: 0.8
    assert clip["prediction"] == "high" and clip["probability"] == 0.8 and clip["detections"] == []  # the same answer, marked
    _print_result(clip, top=2)
    assert capsys.readouterr().out == f"{tmp_path / 'clip.wav'}: high (80.0 %, below the minimum confidence 85.0 %)  low 20.0 %\n"
    sure = dataclasses.replace(band_ensemble, min_confidence=0.85)  # the ensemble's own, chosen on validation: the default
    assert analyse_files([tmp_path / "clip.wav"], sure)[0]["detections"] == []
    assert analyse_files([tmp_path / "clip.wav"], sure, min_confidence=0)[0]["detections"][0]["class"] == "high"


def test_the_ensemble_s_temperature_calibrates_without_changing_a_class(tmp_path, band_ensemble):
    sf.write(tmp_path / "clip.wav", tone(300, 0.4, RATE), RATE)
    softer = dataclasses.replace(band_ensemble, temperature=2.0)
    [plain], [tempered] = analyse_files([tmp_path / "clip.wav"], band_ensemble), analyse_files([tmp_path / "clip.wav"], softer)
    assert tempered["prediction"] == plain["prediction"] == "low"
    assert tempered["probability"] == pytest.approx(0.75, abs=1e-4)  # 0.9 ** 0.5 / (0.9 ** 0.5 + 0.1 ** 0.5)


def test_a_file_s_bytes_are_analysed_as_the_file_is(tmp_path, band_ensemble):
    from audioclass.predict import InMemory

    sf.write(tmp_path / "street.flac", np.concatenate([tone(300, 1.5, RATE), tone(3000, 1.5, RATE)]), RATE, format="FLAC")
    data = (tmp_path / "street.flac").read_bytes()
    on_disk, in_memory, empty, junk = analyse_files(
        [tmp_path / "street.flac", InMemory("audio[0]", data), InMemory("audio[1]", b""), InMemory("audio[2]", b"hello")],
        band_ensemble,
        hop=0.25,
    )
    assert in_memory == on_disk | {"file": "audio[0]"}
    assert empty["error"] == "audio[1]: no bytes; expected an audio file's content"
    assert junk["error"].startswith("audio[2]: cannot decode audio")


@pytest.mark.parametrize("share", ["-0.1", "1.5", "sure"])
def test_a_minimum_confidence_that_is_not_a_share_is_named_in_one_line(share, capsys):
    from audioclass.predict import main

    with pytest.raises(SystemExit) as stopped:
        main(["clip.wav", "--min-confidence", share])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(f"argument --min-confidence: {share}: expected a share in [0, 1], e.g. 0.7")


@pytest.mark.parametrize("hop", ["0", "-1", "soon", "601"])
def test_a_hop_that_is_not_seconds_is_named_in_one_line(hop, capsys):
    from audioclass.predict import main

    with pytest.raises(SystemExit) as stopped:
        main(["clip.wav", "--hop", hop])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(f"argument --hop: {hop}: expected seconds in (0, 600]")


FOUND = [
    {"start": 0.0, "end": 7.5, "class": "rooster", "confidence": 0.9875},
    {"start": 5.0, "end": 10.0, "class": "dog", "confidence": 0.5},
]


def test_detections_as_an_audacity_label_track_and_a_raven_selection_table():
    from audioclass.predict import RAVEN_COLUMNS, audacity_labels, raven_selections

    assert audacity_labels(FOUND) == "0.000\t7.500\trooster (98.8 %)\n5.000\t10.000\tdog (50.0 %)\n"
    header, first, second = (line.split("\t") for line in raven_selections(FOUND, 22050).splitlines())
    assert tuple(header) == RAVEN_COLUMNS
    assert first == ["1", "Spectrogram 1", "1", "0.000", "7.500", "0", "11025.0", "rooster", "0.9875"]
    assert second[0] == "2" and second[3:5] == ["5.000", "10.000"] and second[7] == "dog"
    assert raven_selections([], 22050) == "\t".join(RAVEN_COLUMNS) + "\n"  # a silent recording: a table with no selections


def test_the_command_writes_csv_rows_and_a_raven_and_audacity_file_per_recording(tmp_path, band_ensemble, monkeypatch, capsys):
    from audioclass import predict

    monkeypatch.setattr(predict, "load_ensemble", lambda *args: band_ensemble)
    sf.write(tmp_path / "street.wav", np.concatenate([tone(300, 1.5, RATE), tone(3000, 1.5, RATE)]), RATE)
    (tmp_path / "broken.wav").write_bytes(b"RIFF")
    with pytest.raises(SystemExit) as stopped:
        predict.main(
            [str(tmp_path / "street.wav"), str(tmp_path / "broken.wav"), "--csv", "--hop", "0.25", "--out-dir", str(tmp_path / "labels")]
        )
    assert stopped.value.code == 1  # a file could not be read
    out, err = capsys.readouterr()
    rows = out.splitlines()
    assert rows[0] == "file,start,end,class,confidence" and [r.split(",")[3] for r in rows[1:]] == ["low", "high"]
    assert err.splitlines()[-1].startswith(f"error: {tmp_path / 'broken.wav'}: cannot decode audio")
    assert sorted(p.name for p in (tmp_path / "labels").iterdir()) == ["street.wav.audacity.txt", "street.wav.raven.txt"]
    assert [line.split("\t")[2] for line in (tmp_path / "labels/street.wav.audacity.txt").read_text().splitlines()] == [
        "low (90.0 %)",
        "high (80.0 %)",
    ]


def test_recordings_that_share_a_name_are_refused_before_any_file_is_written(tmp_path):
    from audioclass.predict import write_detection_files

    results = [{"file": f"{folder}/take.wav", "detections": FOUND} for folder in ("monday", "tuesday")]
    with pytest.raises(DataError, match=r"^take\.wav: more than one file of that name"):
        write_detection_files(results, tmp_path / "labels", 22050)
    assert not (tmp_path / "labels").exists()
