"""Does the MLflow UI open this project's experiment on its runs? A real browser says.

    python benchmarks/mlflow_ui.py                       # a scratch store with two runs logged by audioclass.tracking
    python benchmarks/mlflow_ui.py --store mlflow.db     # the project's own store, after dvc repro

Starts ``mlflow server`` on loopback over the store, loads the experiment page
in headless Chromium (Debian's ``chromium`` package: ``apt-get install
chromium``) at the address the README gives, and checks the rendered page: its
heading must be "Runs" and it must list the runs by name. The same page without
``?workflowType=machine_learning`` is loaded too, for the record: MLflow 3.17's
UI keeps one GenAI / model-training switch for every experiment (in the
browser's local storage, GenAI until changed), so that address parameter, not
the experiment's ``mlflow.experimentKind`` tag alone, decides a first visit.
Writes a screenshot of the runs page to ``--out`` and exits 1 if a check fails.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from pipeline import PROJECT, free_port, wait_for

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,900",
    "--virtual-time-budget=20000",
]


def scratch_store(folder: Path) -> tuple[Path, list[str]]:
    """A project folder whose mlflow.db holds two runs logged the way the stages log them."""
    from audioclass import tracking

    (folder / ".dvc").mkdir(parents=True)
    here = Path.cwd()
    os.chdir(folder)
    try:
        names = [f"train-seed{seed}" for seed in (1, 2)]
        for seed, name in enumerate(names, start=1):
            with tracking.run(name, {"seed": seed}, tags={"pipeline_role": "train"}):
                tracking.log_metrics({"val_file_accuracy": 0.8 + seed / 100})
    finally:
        os.chdir(here)
    return folder / "mlflow.db", names


def chromium(url: str, profile: Path, *args: str) -> str:
    shutil.rmtree(profile, ignore_errors=True)  # a fresh browser: nothing remembered from an earlier visit
    result = subprocess.run(
        ["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, url], capture_output=True, text=True, timeout=120
    )
    return result.stdout


def heading(dom: str) -> str:
    found = re.search(r"<h2[^>]*>(?:<[^>]+>)*([^<]+)<", dom)
    return found.group(1).strip() if found else "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, help="an mlflow.db to show (default: a scratch store with two runs)")
    parser.add_argument("--experiment", default="audioclass", help="experiment name (default: audioclass)")
    parser.add_argument("--out", type=Path, default=PROJECT / "benchmarks/reports/mlflow-ui.png", help="screenshot of the runs page")
    args = parser.parse_args()
    if shutil.which("chromium") is None:
        raise SystemExit("error: chromium not found; expected Debian's chromium package (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        if args.store:
            store, names = args.store.resolve(), None
        else:
            store, names = scratch_store(scratch / "project")
        import mlflow

        client = mlflow.MlflowClient(f"sqlite:///{store}")
        experiment = client.get_experiment_by_name(args.experiment)
        if experiment is None:
            raise SystemExit(f"error: {store}: no experiment {args.experiment!r}; expected a store the pipeline logged to")
        names = names or [r.info.run_name for r in client.search_runs([experiment.experiment_id], max_results=5)]
        port = free_port()
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--backend-store-uri",
                f"sqlite:///{store}",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for(f"http://127.0.0.1:{port}/health", 90)
            page = f"http://127.0.0.1:{port}/#/experiments/{experiment.experiment_id}"
            plain = chromium(page, scratch / "profile", "--dump-dom")
            runs_page = f"{page}?workflowType=machine_learning"
            dom = chromium(runs_page, scratch / "profile", "--dump-dom")
            args.out.parent.mkdir(parents=True, exist_ok=True)
            chromium(runs_page, scratch / "profile", f"--screenshot={args.out.resolve()}")
        finally:
            server.terminate()
            server.wait(timeout=30)
    listed = [n for n in names if n in dom]
    print(f"experiment {args.experiment!r} (id {experiment.experiment_id}), tags {experiment.tags}")
    print(f"{page}: heading {heading(plain)!r}")
    print(f"{runs_page}: heading {heading(dom)!r}, runs listed {len(listed)} of {len(names)}")
    print(f"screenshot: {args.out}")
    if heading(dom) != "Runs" or len(listed) != len(names):
        raise SystemExit("error: the experiment page did not open on its runs")


if __name__ == "__main__":
    main()
