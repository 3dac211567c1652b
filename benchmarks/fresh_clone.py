"""Time the README's command 1 as a new user meets it: a fresh clone, set up, then the first `dvc repro`.

    python benchmarks/fresh_clone.py                 # → benchmarks/reports/fresh-clone.{json,md}
    python benchmarks/fresh_clone.py --tests         # and the README's command 2 in the clone afterwards

The project's committed HEAD is cloned into a new folder (``--work``) with
``$AUDIOCLASS_ESC10`` as the data source. Command 1 is read from the README
and run in two parts, each timed as wall time: everything before its
``dvc repro`` (venv, install, ``audioclass data``, ``dvc add``), then
``dvc repro`` itself, whose "Running stage" lines are stamped as they arrive
so each stage's share is known. A second ``dvc repro`` is timed after it. The
load average before the run is recorded: run it with nothing else on the
machine.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

from pipeline import PROJECT, machine, write_report

STAGE = re.compile(r"^Running stage '([^']+)'")
BASELINES = ("raw_vectors", "classical", "cnn1d", "features", "feature_models", "report")
PRETRAINED = ("embed", "head")


def readme_command(number: int) -> str:
    """The README's numbered command: the line after its ``# <number>.`` comment."""
    lines = (PROJECT / "README.md").read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith(f"# {number}."))
    return lines[at + 1].strip()


def timed(command: str, cwd: Path, log: Path, env: dict) -> tuple[float, list[tuple[float, str]]]:
    """Run ``command`` in bash; its wall time, and (seconds since start, stage) for each stage it starts."""
    started, stages = time.perf_counter(), []
    with (
        log.open("w") as out,
        subprocess.Popen(["bash", "-c", command], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as process,
    ):
        for line in process.stdout:
            out.write(line)
            out.flush()
            if match := STAGE.match(line):
                stages.append((time.perf_counter() - started, match.group(1)))
    if process.returncode:
        raise SystemExit(f"{command!r} failed (exit {process.returncode}); its output: {log}")
    return time.perf_counter() - started, stages


def stage_times(stages: list[tuple[float, str]], total: float) -> dict[str, float]:
    """Each stage's wall time: from its start to the next stage's start (the last, to the end)."""
    ends = [t for t, _ in stages[1:]] + [total]
    return {name: round(end - start, 1) for (start, name), end in zip(stages, ends)}


def part(times: dict[str, float], prefixes: tuple[str, ...]) -> float:
    return round(sum(s for name, s in times.items() if name.split("@")[0] in prefixes), 1)


def markdown(report: dict) -> str:
    t, m = report["times_s"], report["machine"]
    minutes = lambda s: f"{s / 60:.1f} min"
    lines = [
        "# Fresh clone: the README's command 1, timed",
        "",
        f"Machine: {m['cpus']} CPUs, {m['memory_gib']} GiB, Python {m['python']}. Commit: `{report['commit']}`. "
        f"Load average before the run: {report['load_before']}. Command: `{report['command']}`.",
        "",
        f"Command 1: `{report['command_1']}`",
        "",
        "| part | wall |",
        "|---|---:|",
        f"| set up: venv, install, `audioclass data`, `dvc add` | {minutes(t['setup'])} |",
        f"| first `dvc repro` | **{minutes(t['dvc_repro'])}** |",
        f"| of which the core path (check → ensemble, the pretrained member included) | {minutes(t['core'])} |",
        f"| of which the pretrained member (embed, head) | {minutes(t['pretrained'])} |",
        f"| of which the study's baselines and the report | {minutes(t['baselines'])} |",
        f"| second `dvc repro` (nothing to do) | {t['second_dvc_repro']:.1f} s |",
    ]
    if "tests" in t:
        lines.append(f"| command 2, the tests: `{report['command_2']}` | {minutes(t['tests'])} |")
    lines += ["", "| stage | wall (s) |", "|---|---:|", *(f"| {name} | {s:.1f} |" for name, s in report["stages_s"].items())]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, help="where to clone (default: a new temporary folder, kept)")
    parser.add_argument("--tests", action="store_true", help="also time the README's command 2 in the clone")
    parser.add_argument("--report", type=Path, default=PROJECT / "benchmarks/reports/fresh-clone", help="report path without suffix")
    args = parser.parse_args()
    if "AUDIOCLASS_ESC10" not in os.environ:
        raise SystemExit("AUDIOCLASS_ESC10: set it to a local ESC-10 copy, e.g. ../shared/datasets/ESC-10")
    work = args.work or Path(tempfile.mkdtemp(prefix="fresh-clone-"))
    clone = work / "audioclass"
    subprocess.run(["git", "clone", "-q", str(PROJECT), str(clone)], check=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True, text=True, check=True).stdout.strip()
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if ".venv" not in p)
    command_1 = readme_command(1)
    setup_command, repro = command_1.rsplit(" && ", 1)
    assert repro == "dvc repro", f"README's command 1 should end in dvc repro: {command_1}"
    load_before = os.getloadavg()[0]
    print(f"cloned {commit} into {clone}; setting up …", flush=True)
    setup, _ = timed(setup_command, clone, work / "setup.log", env)
    print(f"set up in {setup / 60:.1f} min; dvc repro …", flush=True)
    total, stages = timed(". .venv/bin/activate && dvc repro", clone, work / "dvc-repro.log", env)
    second, _ = timed(". .venv/bin/activate && dvc repro", clone, work / "dvc-repro-2.log", env)
    times = stage_times(stages, total)
    baselines = part(times, BASELINES)
    report = {
        "command": "python benchmarks/fresh_clone.py" + (" --tests" if args.tests else ""),
        "commit": commit,
        "machine": machine(),
        "load_before": round(load_before, 2),
        "command_1": command_1,
        "stages_s": times,
        "times_s": {
            "setup": round(setup, 1),
            "dvc_repro": round(total, 1),
            "core": round(total - baselines, 1),
            "pretrained": part(times, PRETRAINED),
            "baselines": baselines,
            "second_dvc_repro": round(second, 1),
        },
    }
    if args.tests:
        report["command_2"] = readme_command(2)
        report["times_s"]["tests"] = round(timed(report["command_2"], clone, work / "tests.log", env)[0], 1)
    write_report(report, markdown(report), args.report)


if __name__ == "__main__":
    main()
