"""Long recordings: how fast `audioclass predict` analyses an hour, and how well it tells what sounds when.

    python benchmarks/long_recording.py                 # → benchmarks/reports/long-recording.{json,md}
    python benchmarks/long_recording.py --hours 0.25    # a shorter speed recording

Needs the project's trained pipeline (``dvc repro``): it runs the project's
own ensemble, as ``audioclass predict`` does, on recordings it builds from the
test split's clips (``data/prepared/clips``, the clips of ``data/split.csv``'s
test rows), so no model has seen them:

- **Accuracy over time.** Every test clip once, end to end in a seeded order
  (80 clips, 400 s on the default split), at the pipeline's sample rate. With
  ``--json --windows``, each instant gets the class of the window whose
  centre is nearest (windows with no class leave it unlabelled). Reported: the
  share of each clip's seconds labelled with its class (mean over clips), and
  of the boundaries between clips of different classes, the share with a
  change of label within one hop.
- **Speed and memory.** The test clips repeated in new seeded orders up to
  ``--hours`` of audio (default one hour), analysed by ``audioclass predict
  --json``, timed as a whole command (model loading included), with the peak
  memory of its process (RSS, sampled every 0.1 s).

Run it with nothing else on the machine: the times are wall time.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import yaml

from pipeline import PROJECT, machine, measure, test_clips, write_report

STEP = 0.1  # seconds between the instants labelled


def build(clips: pd.DataFrame, project: Path, passes: int, seed: int, path: Path) -> pd.DataFrame:
    """``passes`` of every clip, each pass in a new seeded order, written as one WAV; the clips' spans, in seconds."""
    rng = np.random.default_rng(seed)
    spans, offset = [], 0
    with sf.SoundFile(path, "w", samplerate=_rate(project), channels=1, subtype="PCM_16") as out:
        for _ in range(passes):
            for _, clip in clips.iloc[rng.permutation(len(clips))].iterrows():
                y, sr = sf.read(project / "data/prepared" / clip["path"], dtype="int16")
                out.write(y)
                spans.append({"start": offset / sr, "end": (offset + len(y)) / sr, "class_name": clip["class_name"]})
                offset += len(y)
    return pd.DataFrame(spans)


def _rate(project: Path) -> int:
    return int(yaml.safe_load((project / "params.yaml").read_text())["extract"]["sample_rate"])


def labels_over_time(windows: list[dict], duration: float) -> list[str | None]:
    """The class of the window whose centre is nearest each instant, every ``STEP`` seconds; None where that window is silent."""
    centres = np.array([(w["start"] + w["end"]) / 2 for w in windows])
    classes = [None if "probabilities" not in w else max(w["probabilities"], key=w["probabilities"].get) for w in windows]
    instants = np.arange(0, duration, STEP) + STEP / 2
    nearest = np.abs(instants[:, None] - centres[None, :]).argmin(axis=1)
    return [classes[i] for i in nearest]


def accuracy_over_time(spans: pd.DataFrame, labels: list[str | None], hop: float) -> dict:
    instants = np.arange(len(labels)) * STEP + STEP / 2
    labels_arr = np.array(labels, dtype=object)
    shares = [float(np.mean(labels_arr[(instants >= s.start) & (instants < s.end)] == s.class_name)) for s in spans.itertuples(index=False)]
    changes = instants[1:][labels_arr[1:] != labels_arr[:-1]] - STEP / 2
    boundaries = [
        b.start for a, b in zip(spans.itertuples(index=False), spans.iloc[1:].itertuples(index=False)) if a.class_name != b.class_name
    ]
    found = [bool(len(changes) and np.abs(changes - b).min() <= hop) for b in boundaries]
    return {
        "clips": len(spans),
        "seconds_labelled_with_their_class": round(float(np.mean(shares)), 4),
        "clips_mostly_right": round(float(np.mean([s > 0.5 for s in shares])), 4),
        "boundaries": len(boundaries),
        "boundaries_found_within_one_hop": round(float(np.mean(found)), 4),
        "label_changes": len(changes),
    }


def predict(path: Path, *extra: str) -> tuple[dict, list[dict]]:
    result = measure([str(Path(sys.executable).with_name("audioclass")), "predict", str(path), "--json", *extra], PROJECT)
    rows = [json.loads(line) for line in result.pop("log").splitlines() if line.startswith("{")]
    return result, rows


def markdown(report: dict) -> str:
    a, s, m = report["accuracy"], report["speed"], report["machine"]
    return "\n".join(
        [
            "# Long recordings: speed and accuracy over time",
            "",
            f"Machine: {m['cpus']} CPUs, {m['memory_gib']} GiB. Command: `{report['command']}`. "
            f"The project's ensemble on recordings made of the {a['clips']} test clips (never seen in training), "
            f"windows of {report['window_s']:g} s every {report['hop_s']:g} s.",
            "",
            "| accuracy over time (every test clip once, end to end) | |",
            "|---|---:|",
            f"| recording | {report['accuracy_recording_s']:.0f} s |",
            f"| share of each clip's seconds labelled with its class (mean) | **{100 * a['seconds_labelled_with_their_class']:.1f} %** |",
            f"| clips labelled with their class for most of their length | {100 * a['clips_mostly_right']:.1f} % |",
            f"| boundaries between clips of different classes found within one hop "
            f"| **{100 * a['boundaries_found_within_one_hop']:.1f} %** of {a['boundaries']} |",
            f"| label changes in all | {a['label_changes']} |",
            "",
            "| speed (`audioclass predict --json`, model loading included) | |",
            "|---|---:|",
            f"| audio | {s['audio_s'] / 3600:.2f} h ({s['windows']} windows) |",
            f"| wall time | **{s['wall_s'] / 60:.1f} min** ({s['audio_s'] / s['wall_s']:.1f} × real time) |",
            f"| CPU time | {s['cpu_s'] / 60:.1f} min |",
            f"| peak memory | {s['peak_memory_gib']:.2f} GiB |",
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=float, default=1.0, help="audio in the speed recording (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="the clips' order")
    parser.add_argument("--work", type=Path, default=PROJECT / "benchmarks/work/long-recording", help="where the recordings go")
    parser.add_argument("--report", type=Path, default=PROJECT / "benchmarks/reports/long-recording", help="report path without suffix")
    args = parser.parse_args()
    clips = test_clips(PROJECT)
    args.work.mkdir(parents=True, exist_ok=True)
    spans = build(clips, PROJECT, 1, args.seed, args.work / "test-clips.wav")
    _, [timeline] = predict(args.work / "test-clips.wav", "--windows")
    hop = timeline["hop"]
    accuracy = accuracy_over_time(spans, labels_over_time(timeline["windows"], timeline["duration"]), hop)
    passes = max(1, round(args.hours * 3600 / spans["end"].iloc[-1]))
    long = build(clips, PROJECT, passes, args.seed + 1, args.work / "long.wav")
    speed, [hour] = predict(args.work / "long.wav")
    speed |= {"audio_s": float(long["end"].iloc[-1]), "windows": hour["windows_analysed"]}
    report = {
        "command": "python benchmarks/long_recording.py" + (f" --hours {args.hours:g}" if args.hours != 1.0 else ""),
        "machine": machine(),
        "window_s": timeline["windows"][0]["end"] - timeline["windows"][0]["start"],
        "hop_s": hop,
        "accuracy_recording_s": timeline["duration"],
        "accuracy": accuracy,
        "speed": speed,
    }
    write_report(report, markdown(report), args.report)


if __name__ == "__main__":
    main()
