"""The registered ensemble over HTTP: latency of one 5 s clip and throughput, from MLflow's own scoring server.

    python benchmarks/serving.py                      # → benchmarks/reports/serving.{json,md}
    python benchmarks/serving.py --requests 50        # fewer requests

Needs the project's trained pipeline (``dvc repro``), which registers the
ensemble in ``./mlflow.db``. Starts ``mlflow models serve -m
models:/audioclass-ensemble/<latest> --env-manager local`` on loopback, as
``docs/serving.md`` shows, then POSTs one test clip's original recording (5 s,
re-encoded as a 16-bit WAV at the clip's own rate, base64 in
``dataframe_split``) ``--requests`` times, one request at a time (after three
untimed ones, so the model is loaded), with a plain HTTP client. Reported: each request's latency (p50,
p95, max, the client's wall time from sending to the whole answer) and the
throughput in clips per second; then the same with two requests in flight
against ``--workers 2`` (after three untimed pairs, so each worker has loaded
its model). Run it with nothing else on the machine: the times
are wall time on its cores.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf

from pipeline import PROJECT, free_port, machine, test_clips, wait_for, write_report

ENSEMBLE = "audioclass-ensemble"
WARM_UP = 3  # requests per request in flight, untimed


def latest_version(store: str) -> int:
    from mlflow import MlflowClient

    return max(int(v.version) for v in MlflowClient(store).search_model_versions(f"name = '{ENSEMBLE}'"))


def test_clip_wav(project: Path) -> tuple[str, bytes]:
    """The first test clip's original recording as WAV bytes, and its class."""
    first = test_clips(project).iloc[0]
    source = project / json.loads((project / "data/source.json").read_text())["source"]
    y, sr = sf.read(source / first["original_path"], dtype="float32")
    wav = io.BytesIO()
    sf.write(wav, y, sr, format="WAV", subtype="PCM_16")
    return first["class_name"], wav.getvalue()


def serve(uri: str, store: str, workers: int, log: Path) -> tuple[subprocess.Popen, str, float]:
    """The scoring server, started and answering /ping; its URL and the seconds it took to start (see ``log`` if it did not)."""
    port = free_port()
    command = [str(Path(sys.executable).with_name("mlflow")), "models", "serve", "-m", uri, "--env-manager", "local"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    start = time.perf_counter()
    # MLflow starts uvicorn by name: this interpreter's environment must come first on PATH.
    env = os.environ | {"MLFLOW_TRACKING_URI": store, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])}
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as output:
        server = subprocess.Popen(command, cwd=PROJECT, env=env, stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_for(f"{url}/ping", 300, server)
    return server, url, time.perf_counter() - start


def invoke(url: str, body: bytes) -> tuple[float, dict]:
    start = time.perf_counter()
    request = urllib.request.Request(f"{url}/invocations", body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            result = json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        raise SystemExit(f"the server refused a request ({refused.code}): {refused.read().decode()[:2000]}") from None
    return time.perf_counter() - start, result


def load(url: str, body: bytes, requests: int, in_flight: int) -> dict:
    with ThreadPoolExecutor(in_flight) as pool:
        # Warm-up requests in flight together, so that every worker has loaded its model (a few seconds) before timing.
        list(pool.map(lambda _: invoke(url, body), range(WARM_UP * in_flight)))
        start = time.perf_counter()
        answers = list(pool.map(lambda _: invoke(url, body), range(requests)))
    wall = time.perf_counter() - start
    latencies = np.array([seconds for seconds, _ in answers])
    classes = {a["predictions"][0]["prediction"] for _, a in answers}
    return {
        "requests": requests,
        "in_flight": in_flight,
        "p50_s": round(float(np.percentile(latencies, 50)), 3),
        "p95_s": round(float(np.percentile(latencies, 95)), 3),
        "max_s": round(float(latencies.max()), 3),
        "clips_per_s": round(requests / wall, 2),
        "wall_s": round(wall, 1),
        "classes": sorted(classes),
    }


def markdown(report: dict) -> str:
    m = report["machine"]
    rows = [
        f"| {r['workers']} | {r['in_flight']} | {r['start_s']:.0f} s | **{1000 * r['p50_s']:.0f} ms** | **{1000 * r['p95_s']:.0f} ms** "
        f"| {1000 * r['max_s']:.0f} ms | **{r['clips_per_s']:.2f}** | {', '.join(r['classes'])} |"
        for r in report["runs"]
    ]
    return "\n".join(
        [
            "# Serving: the registered ensemble over HTTP",
            "",
            f"Machine: {m['cpus']} CPUs, {m['memory_gib']} GiB. Command: `{report['command']}`. "
            f"Model: `{report['model']}` (group `{report['group']}`, method `{report['method']}`), served by "
            "`mlflow models serve --env-manager local` on loopback. Each request: one 5 s test clip "
            f"({report['clip_class']}), its original recording as a {report['wav_kib']:.0f} KiB WAV, base64 in "
            "`dataframe_split`; latency is the client's wall time from sending to the whole answer, after "
            f"{WARM_UP} requests per request in flight to warm up.",
            "",
            "| workers | requests in flight | start-up | p50 | p95 | max | clips per second | classes answered |",
            "|---:|---:|---:|---:|---:|---:|---:|---|",
            *rows,
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200, help="requests per configuration (default 200)")
    parser.add_argument("--report", type=Path, default=PROJECT / "benchmarks/reports/serving", help="report path without suffix")
    args = parser.parse_args()
    store = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{PROJECT / 'mlflow.db'}"
    version = latest_version(store)
    uri = f"models:/{ENSEMBLE}/{version}"
    from mlflow import MlflowClient

    tags = MlflowClient(store).get_model_version(ENSEMBLE, str(version)).tags
    clip_class, wav = test_clip_wav(PROJECT)
    body = json.dumps({"dataframe_split": {"columns": ["audio"], "data": [[base64.b64encode(wav).decode()]]}}).encode()
    runs = []
    for workers, in_flight in ((1, 1), (2, 2)):
        server, url, started = serve(uri, store, workers, PROJECT / "benchmarks/work/serving/server.log")
        try:
            runs.append({"workers": workers, "start_s": round(started, 1)} | load(url, body, args.requests, in_flight))
        finally:
            server.terminate()
            server.wait(timeout=60)
    report = {
        "command": "python benchmarks/serving.py" + (f" --requests {args.requests}" if args.requests != 200 else ""),
        "machine": machine(),
        "model": uri,
        "group": tags.get("group"),
        "method": tags.get("method"),
        "clip_class": clip_class,
        "wav_kib": len(wav) / 1024,
        "runs": runs,
    }
    write_report(report, markdown(report), args.report)


if __name__ == "__main__":
    main()
