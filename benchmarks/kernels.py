"""Seconds per training epoch with oneDNN's CPU kernels on and off (``TF_ENABLE_ONEDNN_OPTS``).

    python benchmarks/kernels.py                 # → benchmarks/reports/kernels.{json,md}
    python benchmarks/kernels.py --repeats 3 --files 2560

TensorFlow turns oneDNN on by itself only on some CPUs; the package turns it
on everywhere (``audioclass/__init__.py``). This measures what that buys on
the machine at hand: the train stage's own ``fit_run`` on synthetic
spectrograms of the default shape (64 bands × 216 frames), for
``params.yaml``'s ``train.model`` / ``train.fit`` and for the tune stage's
usual pick with averaging (width 12, first kernel 7, batch 32). Each
(setting, repeat) is a fresh process, since the variable is read when
TensorFlow loads, and repeats alternate the settings so that a machine's
drift hits both alike. The figure is the median over epochs after the first
(which traces the graph). Repeats of one setting must end on identical
weights: the kernels may change the arithmetic, never its repeatability.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from pipeline import PROJECT, machine, write_report

SHAPE = (64, 216, 1)  # spectrograms' n_mels × (1 + 110250 // hop_length) × 1 at the defaults
CONFIGS = {
    "params.yaml": ({}, {}),
    "width 12, first kernel 7, batch 32": ({"width": 12, "first_kernel": 7}, {"batch_size": 32, "ema_momentum": 0.99}),
}


def worker(config: str, files: int, epochs: int) -> dict:
    """In this process: one fit_run; the seconds of each epoch and a hash of the final weights."""
    import keras
    import numpy as np
    import pandas as pd
    from tensorflow.python.util import _pywrap_util_port

    from audioclass.config import load_params, stage_config
    from audioclass.dataset import Data, Split
    from audioclass.training import TrainConfig, fit_run

    cfg = stage_config(TrainConfig, load_params(PROJECT / "params.yaml"), "train")
    model_changes, fit_changes = CONFIGS[config]
    model = dataclasses.replace(cfg.model, **model_changes)
    fit = dataclasses.replace(cfg.fit, **fit_changes, epochs=epochs, patience=epochs)
    rng = np.random.default_rng(0)

    def split(n: int) -> Split:
        return Split(
            rng.random((n, *SHAPE), dtype=np.float32).astype(np.float16),
            pd.DataFrame({"label": np.arange(n) % 10, "clip_id": np.arange(n)}),
        )

    class Clock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self.start)

    data = Data(split(files), split(files // 4), None, tuple(f"c{i}" for i in range(10)))
    clock = Clock()
    fitted, _ = fit_run(model, fit, data, seed=1, callbacks=(clock,), verbose=0)
    weights = hashlib.sha256(b"".join(w.tobytes() for w in fitted.get_weights())).hexdigest()[:16]
    return {"onednn": _pywrap_util_port.IsMklEnabled(), "epoch_seconds": [round(s, 2) for s in clock.seconds], "weights": weights}


def markdown(report: dict) -> str:
    lines = [
        "# oneDNN kernels: seconds per training epoch",
        "",
        f"Machine: {report['machine']['cpus']} CPUs, {report['machine']['memory_gib']} GiB, {report['cpu']}. "
        f"TensorFlow {report['tensorflow']}. Command: `{report['command']}`. {report['files']} training files "
        f"and {report['files'] // 4} validation files of {SHAPE[0]} × {SHAPE[1]}, {report['epochs']} epochs, "
        f"{report['repeats']} repeat(s).",
        "",
        "| model and fit | TF_ENABLE_ONEDNN_OPTS=0 (s / epoch) | =1 (s / epoch) | speed-up | repeats identical (0 / 1) |",
        "|---|---:|---:|---:|---|",
    ]
    for config, row in report["results"].items():
        off, on = row["0"]["median_epoch_seconds"], row["1"]["median_epoch_seconds"]
        same = " / ".join("yes" if row[s]["repeatable"] else "no" for s in ("0", "1"))
        lines.append(f"| {config} | {off:.2f} | {on:.2f} | {off / on:.2f}× | {same} |")
    lines += [
        "",
        "Median over every repeat's epochs after the first. The default is `=1`, set by the package "
        "before TensorFlow loads; `TF_ENABLE_ONEDNN_OPTS=0 dvc repro` goes back to Eigen's kernels.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=1280, help="training files per epoch (validation: a quarter as many)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run; the first is left out of the median")
    parser.add_argument("--repeats", type=int, default=2, help="runs per (config, setting), alternating settings")
    parser.add_argument("--report", type=Path, default=PROJECT / "benchmarks/reports/kernels", help="report path without suffix")
    parser.add_argument("--worker", metavar="CONFIG", help=argparse.SUPPRESS)  # one measured run, in its own process
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.files, args.epochs)))
        return
    if args.epochs < 2 or args.repeats < 1 or args.files < 4:
        raise SystemExit("--epochs: expected at least 2; --repeats: at least 1; --files: at least 4")
    results: dict = {config: {s: {"runs": []} for s in ("0", "1")} for config in CONFIGS}
    for repeat in range(args.repeats):
        for config in CONFIGS:
            for setting in ("0", "1") if repeat % 2 == 0 else ("1", "0"):
                command = [sys.executable, __file__, "--worker", config, "--files", str(args.files), "--epochs", str(args.epochs)]
                env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": setting}
                done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
                run = json.loads(done.stdout.strip().splitlines()[-1])
                if run["onednn"] != (setting == "1"):  # else both columns would time the same kernels
                    raise SystemExit(f"TF_ENABLE_ONEDNN_OPTS={setting}: TensorFlow reported oneDNN {'on' if run['onednn'] else 'off'}")
                results[config][setting]["runs"].append(run)
                print(f"{config}, TF_ENABLE_ONEDNN_OPTS={setting}: {run['epoch_seconds']} s", flush=True)
    for row in results.values():
        for cell in row.values():
            cell["median_epoch_seconds"] = statistics.median(s for run in cell["runs"] for s in run["epoch_seconds"][1:])
            cell["repeatable"] = len({run["weights"] for run in cell["runs"]}) == 1
    import tensorflow as tf

    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
        "unknown CPU",
    )
    command = "python benchmarks/kernels.py" + "".join(
        f" --{k} {getattr(args, k)}" for k in ("files", "epochs", "repeats") if getattr(args, k) != parser.get_default(k)
    )
    report = {
        "command": command,
        "machine": machine(),
        "cpu": cpu,
        "tensorflow": tf.__version__,
        "files": args.files,
        "epochs": args.epochs,
        "repeats": args.repeats,
        "results": results,
    }
    write_report(report, markdown(report), args.report)


if __name__ == "__main__":
    main()
