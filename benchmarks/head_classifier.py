"""The pretrained heads' classifier: logistic regression against shrunk LDA, max pooling, and balanced models.

    python benchmarks/head_classifier.py   # after `benchmarks/head_probe.py`; → benchmarks/reports/head-classifier.{json,md}

The heads of ``benchmarks/head_probe.py``'s choice (BirdNET and aiSFX side by
side, and aiSFX alone, the licence-clean one; both pooled ``mean_std``) are
trained per official fold, on each training clip's original and first copy,
as the pipeline trains them, and four ways:

- ``today``: the head stage's logistic regression on standardised values,
  ``C`` from ``head.C``;
- ``lda``: linear discriminant analysis on the same values with a shrunk
  covariance, its shrinkage from :data:`SHRINKAGES`;
- ``+max``: today's head with each model's maximum over its windows' (blocks')
  vectors beside their mean and standard deviation;
- ``balanced`` (joint head only): today's head with each model's standardised
  values scaled by √(mean width / its width), so that both weigh alike under
  the one penalty.

Each head's hyperparameter is chosen within training, as the head stage
chooses ``C``: by log-loss on the originals of a grouped four-fold split of
the training clips. Validation's originals are the score, test is context,
and rule 6 in docs/benchmarks.md decides. It reuses head_probe's vectors
(``benchmarks/work/head-probe/vectors.npz``). The heads in :data:`SHIPPED`
are then set beside the CNN runs that ``benchmarks/crossval.py`` stored, as
head_probe does, for what ``predict`` would ship on each fold.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from audioclass.calibration import cross_entropy
from audioclass.config import load_params, stage_config
from audioclass.ensembling import EnsembleConfig
from audioclass.heads import INNER_GROUPS, HeadConfig
from audioclass.parallel import default_jobs, parallel_map
from audioclass.splits import SplitConfig, assign_splits
from audioclass.tables import read_table
from head_probe import BACKENDS, decide, embed_corpus, ensembles, shipped_table, summarise, summarise_shipped, verdict_table
from pipeline import PROJECT, benchmark_parser, machine, write_report

INPUTS = {"joint": "birdnet+aisfx", "aisfx": "aisfx (licence-clean)"}
SHRINKAGES = (0.1, 0.3, 0.5, 0.7, 0.9)
# The heads set beside the CNN runs: the joint head rule 6 chose, and aiSFX's with the same pooling (embed.pooling is
# one key for every model, so it is what the licence-clean configuration gets) and with today's.
SHIPPED = (("joint", "birdnet+aisfx", "+max"), ("aisfx", "aisfx", "+max"), ("aisfx", "aisfx", "today"))


def pooled(vectors: dict[str, np.ndarray], head: str, with_max: bool) -> tuple[np.ndarray, list[int]]:
    """A head's input rows, and each model's width in them: per model, the mean and standard deviation over a
    file's vectors, and their maximum with ``with_max``."""
    parts = []
    for b in BACKENDS if head == "joint" else (head,):
        v = vectors[b]
        parts.append(np.concatenate([v.mean(axis=1), v.std(axis=1), *([v.max(axis=1)] if with_max else [])], axis=1))
    return np.concatenate(parts, axis=1), [p.shape[1] for p in parts]


def model(variant: str, param: float, widths: list[int]):
    """An unfitted scikit-learn head."""
    if variant == "lda":
        return make_pipeline(StandardScaler(), LinearDiscriminantAnalysis(solver="lsqr", shrinkage=param))
    steps = [StandardScaler()]
    if variant == "balanced":
        weight = np.concatenate([np.full(w, np.sqrt(np.mean(widths) / w)) for w in widths])
        steps.append(FunctionTransformer(lambda z, weight=weight: z * weight))
    return make_pipeline(*steps, LogisticRegression(C=param, max_iter=2000))


def probabilities(fitted, x: np.ndarray, n_classes: int) -> np.ndarray:
    """(n, n_classes), a column for every class, also those training lacked."""
    p = np.zeros((len(x), n_classes))
    p[:, fitted.classes_] = fitted.predict_proba(x)
    return p


def score(task: tuple, n_classes: int) -> dict:
    """One head on one fold: its hyperparameter chosen within training, then validation's and test's originals scored."""
    variant, params, widths, x, rows = task
    parts = {s: (rows["split"] == s).to_numpy() & ((rows["copy"] == 0).to_numpy() | (s == "train")) for s in ("train", "val", "test")}
    train_x, train_y, train_rows = x[parts["train"]], rows["label"].to_numpy()[parts["train"]], rows[parts["train"]]
    originals = (train_rows["copy"] == 0).to_numpy()
    losses = dict.fromkeys(params, 0.0)
    for fit, held in GroupKFold(INNER_GROUPS).split(train_x, train_y, train_rows["source_id"].to_numpy()):
        held = held[originals[held]]
        for param in params:
            fitted = model(variant, param, widths).fit(train_x[fit], train_y[fit])
            losses[param] += cross_entropy(probabilities(fitted, train_x[held], n_classes), train_y[held]) * len(held)
    best = min(params, key=lambda p: (losses[p], p))
    fitted = model(variant, best, widths).fit(train_x, train_y)
    result = {"C": best}
    for s in ("val", "test"):
        y = rows["label"].to_numpy()[parts[s]]
        p = probabilities(fitted, x[parts[s]], n_classes)
        result[s] = {
            "log_loss": round(float(cross_entropy(p, y)), 4),
            "accuracy": round(float((p.argmax(axis=1) == y).mean()), 4),
            "clips": int(len(y)),
            "probabilities": pd.DataFrame(p.astype(np.float32), index=rows["clip_id"].to_numpy()[parts[s]]),
        }
    return result


def probe_corpus() -> tuple[dict, pd.DataFrame, pd.DataFrame, dict[str, np.ndarray]]:
    """params.yaml, the clips, head_probe's files (each clip's original and first copy) and their window vectors."""
    params = load_params(PROJECT / "params.yaml")
    clips = read_table(PROJECT / "data/prepared/metadata.csv")
    manifest = read_table(PROJECT / "data/augmented/manifest.csv")  # ids as text, as the head stage reads them
    files = manifest[manifest["copy"].isin((0, 1))].sort_values(["clip_id", "copy"]).reset_index(drop=True)
    vectors, _ = embed_corpus(files, PROJECT / "benchmarks/work/head-probe/vectors.npz")
    return params, clips, files, vectors


def fold_rows(params: dict, clips: pd.DataFrame, files: pd.DataFrame) -> Iterator[tuple[int, pd.DataFrame]]:
    """Per official fold as test: the files, each with its split by the pipeline's own rule for the rest."""
    for k in sorted(int(k) for k in clips["fold"].unique()):
        cfg = stage_config(SplitConfig, {"split": {**params["split"], "strategy": "folds", "test_fold": k}}, "split")
        split = clips.assign(split=assign_splits(clips, cfg).to_numpy())
        yield k, files.drop(columns=["split"], errors="ignore").merge(split[["clip_id", "split"]], on="clip_id")


def fold_scores(params: dict, clips: pd.DataFrame, files: pd.DataFrame, inputs: dict[tuple[str, str], tuple]) -> dict:
    """Today's logistic regression (``C`` from ``head.C``, chosen within training) on each input, ``{(head, name): (x,
    widths)}``, per official fold: ``{head: {fold: {name: score}}}``, without the probabilities."""
    n_classes = int(clips["label"].max()) + 1
    cs = tuple(stage_config(HeadConfig, params, "head").C)
    tasks, jobs = [], []
    for k, rows in fold_rows(params, clips, files):
        for (head, name), (x, widths) in inputs.items():
            tasks.append((k, head, name))
            jobs.append(("lr", cs, widths, x, rows))
    run: Callable[[tuple], dict] = lambda job: score(job, n_classes)  # noqa: E731
    folds: dict = {}
    for (k, head, name), result in zip(tasks, parallel_map(run, jobs, jobs=default_jobs(), desc="heads", unit="head")):
        for part in ("val", "test"):
            del result[part]["probabilities"]
        folds.setdefault(head, {}).setdefault(k, {})[name] = result
    return folds


def main() -> None:
    parser = benchmark_parser(__doc__, "head-classifier")
    args = parser.parse_args()
    params, clips, files, vectors = probe_corpus()
    n_classes = int(clips["label"].max()) + 1
    cs = tuple(stage_config(HeadConfig, params, "head").C)
    variants: dict[str, tuple[str, bool, tuple[float, ...]]] = {
        "today": ("lr", False, cs),
        "lda": ("lda", False, SHRINKAGES),
        "+max": ("lr", True, cs),
        "balanced": ("balanced", False, cs),
    }
    inputs = {(head, with_max): pooled(vectors, head, with_max) for head in INPUTS for with_max in (False, True)}
    tasks, jobs = [], []
    for k, rows in fold_rows(params, clips, files):
        for head in INPUTS:
            for name, (variant, with_max, grid) in variants.items():
                if name == "balanced" and head != "joint":
                    continue
                x, widths = inputs[head, with_max]
                tasks.append((k, head, name))
                jobs.append((variant, grid, widths, x, rows))
    run: Callable[[tuple], dict] = lambda job: score(job, n_classes)  # noqa: E731
    scores = parallel_map(run, jobs, jobs=default_jobs(), desc="heads", unit="head")
    folds: dict = {}
    for (k, head, name), result in zip(tasks, scores):
        folds.setdefault(head, {}).setdefault(k, {})[name] = result
    summary, decisions = {}, {}
    for head, by_fold in folds.items():
        names = list(next(iter(by_fold.values())))
        summary[head] = {n: summarise([by_fold[k][n] for k in by_fold]) for n in names}
        decisions[head] = decide(by_fold, "today", names)
    # The chosen heads beside the CNN runs the five-fold run stored, through the library's own ensemble rule.
    by_candidate = {k: {f"{head}/{name}": folds[head][k][name] for head in folds for name in folds[head][k]} for k in folds["joint"]}
    members = {f"head-{name}/{variant}": f"{head}/{variant}" for head, name, variant in SHIPPED}
    shipped = summarise_shipped(ensembles(by_candidate, members, stage_config(EnsembleConfig, params, "ensemble")))
    for by_fold in folds.values():
        for result in by_fold.values():
            for scored in result.values():
                for part in ("val", "test"):
                    del scored[part]["probabilities"]
    report = {"machine": machine(), "files": len(files), "shrinkages": SHRINKAGES, "folds": folds}
    report |= {"summary": summary, "decisions": decisions, "shipped": shipped}
    write_report(report, markdown(report), args.report)


def markdown(report: dict) -> str:
    lines = [
        "# The pretrained heads' classifier",
        "",
        f"Machine: {report['machine']['cpus']} CPUs. Command: `python benchmarks/head_classifier.py`. "
        f"{report['files']} files (each clip's original and first copy), head_probe's vectors. Each head's "
        "hyperparameter (C, or LDA's shrinkage) chosen by log-loss within the training clips; validation chose "
        "nothing. Rule 6 in docs/benchmarks.md decides, on validation's originals; test is context. Pretrained on "
        "outside data: BirdNET (CC BY-NC-SA 4.0), aiSFX (CC BY 4.0).",
    ]
    for head, title in INPUTS.items():
        decision = report["decisions"][head]
        lines += [
            "",
            f"## {title} (`{head}/mean_std`): chosen **{decision['chosen']}**",
            "",
            *verdict_table(report["summary"][head], decision, "head", "chosen per fold"),
        ]
    lines += [
        "",
        "Means ± SE over the five folds. Today: the head stage's logistic regression.",
        "",
        "## The shipped ensemble with the chosen heads",
        "",
        "Per fold, `ensemble.choose` over each member set, as in `benchmarks/reports/head-probe.md`: the CNN runs and "
        "heads that `benchmarks/crossval.py` stored, beside each chosen head above (`head-<model>/<head>`), fitted on the "
        "same splits. Held-out: the check on validation's originals; test is context.",
        "",
        *shipped_table(report["shipped"]),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
