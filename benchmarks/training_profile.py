"""Where a training run's time goes, against what two cores can compute.

    python benchmarks/training_profile.py                      # → benchmarks/reports/training-profile.{json,md}
    python benchmarks/training_profile.py --runs run-1 --epochs 2

For each run named (by default ``run-1``, a ``compact_cnn``, and ``crnn-1``),
in a fresh process, on the project's own spectrograms (``data/spectrograms``,
read from disk as the train stage reads them), with the run's values from
``params.yaml``:

- the input pipeline alone: one epoch of the train stage's own training
  ``tf.data`` pipeline, batches made and dropped;
- a training epoch: ``model.fit`` over that pipeline without validation,
  timed per epoch (the first traces the graph, so the median of the others
  counts);
- the validation pass each epoch makes (``_dataset``, batches of 256);
- the model's compute: forward FLOPs per example counted by TensorFlow's
  profiler on the traced graph; a training step is taken as three forward
  passes (forward, and the backward pass's two products per layer);
- what the machine computes at best: a float32 matrix product
  (2048 × 2048) in the same process, with the same thread settings.

It then sets each run's measured epoch beside the epoch it would take at the
matrix product's rate, and times the whole train stage of that run (its own
command, in a sandbox copy of the project over the same spectrograms, logging
to the sandbox's MLflow store), per epoch it ran. Run it with nothing else on
the machine: its figures are wall time, and epochs timed in one process vary
by a few seconds from run to run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from audioclass import sandbox
from pipeline import PROJECT, machine, write_report

MATMUL = 2048


def worker(run_name: str, epochs: int) -> dict:
    """In this process: the figures of one run (module docstring)."""
    import keras
    import numpy as np
    import tensorflow as tf
    from tensorflow.python.profiler.model_analyzer import profile
    from tensorflow.python.profiler.option_builder import ProfileOptionBuilder

    from audioclass.config import load_params, stage_config
    from audioclass.dataset import load_data
    from audioclass.training import TrainConfig, _compiled_model, _dataset, _training_dataset

    cfg = stage_config(TrainConfig, load_params(PROJECT / "params.yaml"), "train")
    run = cfg.run(run_name)
    data = load_data(PROJECT / "data/spectrograms", ("train", "val"), on_disk=True)
    n_classes = len(data.class_names)

    started = time.perf_counter()
    batches = sum(1 for _ in _training_dataset(data.train, run.fit, n_classes, seed=run.seed))
    pipeline_s = time.perf_counter() - started

    model, _ = _compiled_model(run.model, run.fit, data.train, n_classes, seed=run.seed)
    epoch_s: list[float] = []

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            epoch_s.append(time.perf_counter() - self.started)

    training = _training_dataset(data.train, run.fit, n_classes, seed=run.seed)
    model.fit(training, epochs=epochs, callbacks=[EpochTimer()], shuffle=False, verbose=0)

    validation = _dataset(data.val, 256, n_classes)
    val_s = []
    for _ in range(3):
        started = time.perf_counter()
        model.predict(validation, verbose=0)
        val_s.append(time.perf_counter() - started)

    shape = (1, *model.input_shape[1:])
    graph = tf.function(lambda x: model(x, training=False)).get_concrete_function(tf.TensorSpec(shape, tf.float32)).graph
    forward_flops = profile(graph, options=ProfileOptionBuilder(ProfileOptionBuilder.float_operation()).with_empty_output().build())
    forward_flops = forward_flops.total_float_ops

    a = tf.random.stateless_uniform((MATMUL, MATMUL), seed=(1, 2))
    tf.linalg.matmul(a, a).numpy()  # warm-up
    started, repeats = time.perf_counter(), 20
    for _ in range(repeats):
        product = tf.linalg.matmul(a, a)
    product.numpy()
    peak = 2 * MATMUL**3 * repeats / (time.perf_counter() - started)

    return {
        "run": run_name,
        "architecture": run.model.architecture,
        "parameters": int(model.count_params()),
        "train_files": len(data.train.y),
        "val_files": len(data.val.y),
        "batch_size": run.fit.batch_size,
        "batches_per_epoch": batches,
        "input_pipeline_s": round(pipeline_s, 2),
        "epoch_s": [round(s, 2) for s in epoch_s],
        "train_epoch_s": round(statistics.median(epoch_s[1:] or epoch_s), 2),
        "validation_pass_s": round(statistics.median(val_s), 2),
        "forward_flops_per_file": int(forward_flops),
        "matmul_flops_per_s": peak,
        "threads": {
            "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
        },
        "numpy": np.__version__,
        "tensorflow": tf.__version__,
    }


def stage_wall(run_name: str) -> dict:
    """The train stage of ``run_name``, as ``dvc repro`` runs it, timed: its wall seconds and the epochs it ran."""
    with tempfile.TemporaryDirectory() as scratch:
        box = sandbox.create(PROJECT, Path(scratch) / "project")
        (box / "data").mkdir(exist_ok=True)
        (box / "data/spectrograms").symlink_to(PROJECT / "data/spectrograms")
        (box / "reports/tune").mkdir(parents=True, exist_ok=True)
        (box / "reports/tune/best_params.yaml").write_bytes((PROJECT / "reports/tune/best_params.yaml").read_bytes())
        cmd = [sys.executable, "-m", "audioclass.stages.train", "--run", run_name, "--data", "data/spectrograms"]
        cmd += ["--hyperparameters", "reports/tune/best_params.yaml", "--out", f"models/{run_name}"]
        cmd += ["--metrics", f"reports/train/{run_name}.json", "--history", f"reports/train/{run_name}.csv"]
        started = time.perf_counter()
        subprocess.run(cmd, cwd=box, env=sandbox.environment(box), capture_output=True, text=True, check=True)
        wall = time.perf_counter() - started
        return {"stage_s": round(wall, 1), "epochs_run": json.loads((box / f"reports/train/{run_name}.json").read_text())["epochs_run"]}


def projected(figures: dict) -> dict:
    """Per epoch: the training compute, its time at the matrix product's rate, and how far the run is from it."""
    train_flops = 3 * figures["forward_flops_per_file"] * figures["train_files"]
    val_flops = figures["forward_flops_per_file"] * figures["val_files"]
    at_peak_s = (train_flops + val_flops) / figures["matmul_flops_per_s"]
    measured_s = figures["train_epoch_s"] + figures["validation_pass_s"]
    stage = figures["stage"]
    return {
        "train_gflop_per_epoch": round(train_flops / 1e9, 1),
        "achieved_gflops": round((train_flops + val_flops) / measured_s / 1e9, 2),
        "matmul_gflops": round(figures["matmul_flops_per_s"] / 1e9, 1),
        "epoch_at_matmul_rate_s": round(at_peak_s, 2),
        "measured_over_matmul_rate": round(measured_s / at_peak_s, 1),
        "stage_min": round(stage["stage_s"] / 60, 2),
        "stage_s_per_epoch": round(stage["stage_s"] / stage["epochs_run"], 1),
    }


def markdown(report: dict) -> str:
    lines = [
        "# Training profile: where a run's time goes",
        "",
        f"Machine: {report['machine']['cpus']} CPUs. Command: `{report['command']}`. "
        "Wall time, in one process per run, on the project's spectrograms; nothing else should share the machine.",
        "",
        "| run | architecture | parameters | train files | batches | input pipeline alone (s/epoch) | training epoch (s) "
        "| validation pass (s) | forward MFLOP / file | train GFLOP / epoch | achieved GFLOP/s | matmul GFLOP/s "
        "| epoch at matmul rate (s) | measured ÷ that | whole train stage (min) | stage ÷ its epochs (s) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["runs"]:
        p = r["projected"]
        lines.append(
            f"| {r['run']} | {r['architecture']} | {r['parameters']:,} | {r['train_files']:,} | {r['batches_per_epoch']} "
            f"| {r['input_pipeline_s']:.1f} | {r['train_epoch_s']:.1f} | {r['validation_pass_s']:.1f} "
            f"| {r['forward_flops_per_file'] / 1e6:.0f} | {p['train_gflop_per_epoch']:.0f} | {p['achieved_gflops']:.1f} "
            f"| {p['matmul_gflops']:.0f} | {p['epoch_at_matmul_rate_s']:.1f} | {p['measured_over_matmul_rate']:.1f}× "
            f"| {p['stage_min']:.1f} ({r['stage']['epochs_run']} epochs) | {p['stage_s_per_epoch']:.1f} |"
        )
    threads = report["runs"][0]["threads"] if report["runs"] else {}
    lines += [
        "",
        f"TensorFlow {report['runs'][0]['tensorflow'] if report['runs'] else '?'}, thread pools as TensorFlow chose them "
        f"(intra-op {threads.get('intra_op')}, inter-op {threads.get('inter_op')}; 0 = one per core), op determinism on "
        "(the train stage's setting). A training step is counted as three forward passes; the matrix product is the "
        "best rate this machine's TensorFlow reaches, not a bound the convolutions and recurrences of these small models "
        "can be expected to meet.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", default=["run-1", "crnn-1"], help="runs of train.runs to profile")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs timed per run (the first traces the graph)")
    parser.add_argument("--report", type=Path, default=PROJECT / "benchmarks/reports/training-profile", help="report path without suffix")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.epochs)))
        return
    runs = []
    for name in args.runs:
        print(f"{name} …", file=sys.stderr, flush=True)
        out = subprocess.run(
            [sys.executable, __file__, "--worker", name, "--epochs", str(args.epochs)], capture_output=True, text=True, check=True
        ).stdout
        figures = json.loads(out.strip().splitlines()[-1])
        figures["stage"] = stage_wall(name)
        runs.append({**figures, "projected": projected(figures)})
    command = "python benchmarks/training_profile.py" + "".join(f" {a}" for a in sys.argv[1:])
    report = {"command": command, "machine": machine(), "runs": runs}
    write_report(report, markdown(report), args.report)


if __name__ == "__main__":
    main()
