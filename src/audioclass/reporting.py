"""Reporting: the results table beside the published figures, and the figures people look at."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from audioclass import study
from audioclass.ensembling import ALL, PRETRAINED, SCRATCH, every_member, is_pretrained, mean_se

log = logging.getLogger(__name__)

COLUMNS = ["Model", "Input", "Test, clips", "Test, files", "Validation"]
ALIGN = ["---", "---", "---:", "---:", "---:"]
PUBLISHED_FOR = "ESC-10"  # the corpus study.py's figures were measured on
GROUP_NAMES = {SCRATCH: "the trained runs", PRETRAINED: "the pretrained heads", ALL: "every member"}
KEYS = ("test_clip_accuracy", "test_file_accuracy", "val_file_accuracy")  # the columns of a scored row
# A head predicts only validation's rows of the kind test scores (each clip's original recording, by default), so
# rows with a head give the accuracy on those: the validation rows the ensemble is fitted on and chosen by.
ON_ROWS = "val_accuracy"
PRETRAINED_NOTE = (
    "These rows use models trained on outside data (`embed.models`; BirdNET's weights are CC BY-NC-SA 4.0, "
    "non-commercial, and its training data may share recordings with ESC-50; aiSFX's are CC BY 4.0, trained on "
    "sound-effects libraries that may hold Freesound recordings too). They are not comparable with the "
    "from-scratch rows above, nor with the published figures, which use no outside data. Validation here is each "
    "validation clip's row of the kind test scores (its original recording, by default), not every file.\n\n"
)


@dataclass(frozen=True)
class Row:
    model: str
    input: str
    test_clip: str
    test_file: str
    validation: str
    published: str = "–"

    def markdown(self, published: bool) -> str:
        cells = [self.model, self.input, self.test_clip, self.test_file, self.validation] + ([self.published] if published else [])
        return "| " + " | ".join(cells) + " |"


def header(published: bool) -> list[str]:
    columns, align = COLUMNS + ["Published"] * published, ALIGN + ["---"] * published
    return ["| " + " | ".join(columns) + " |", "|" + "|".join(align) + "|"]


def pct(value: float) -> str:
    return f"{100 * value:.1f} %"


def pct_se(values: list[float]) -> str:
    mean, se = mean_se(values)
    return f"{100 * mean:.1f} ± {100 * se:.1f} %"


def scored(model: str, input_: str, m: dict, published: str = "–", validation: str = "val_file_accuracy") -> Row:
    return Row(model, input_, pct(m["test_clip_accuracy"]), pct(m["test_file_accuracy"]), pct(m[validation]), published)


def baseline_rows(classical: dict, cnn1d: dict[str, dict], features: dict, feature_estimators: dict[str, str]) -> list[Row]:
    rows = [scored(name, "1D raw", m, f"{study.RAW_1D[name]:.1f} %" if name in study.RAW_1D else "–") for name, m in classical.items()]
    for cell, m in cnn1d.items():
        architecture, kernel = cell.rsplit("-k", 1)
        rows.append(
            scored(
                f"1D CNN {architecture}, first kernel {kernel}", "1D raw", m, f"{study.CNN1D[cell]:.1f} %" if cell in study.CNN1D else "–"
            )
        )
    for set_name, models in features.items():
        for name, m in models.items():
            label, figure = study.DATASET_PAPER.get(feature_estimators.get(name, ""), ("", None))
            rows.append(
                Row(
                    name,
                    f"features: {set_name}",
                    pct(m["test_clip_accuracy"]),
                    pct(m["test_file_accuracy"]),
                    f"CV {100 * m['cv_accuracy']:.1f} ± {100 * m['cv_accuracy_sd']:.1f} %",
                    f"{figure:.1f} % ({label}, 5-fold CV)" if figure else "–",
                )
            )
    return rows


def cnn_rows(ensemble: dict) -> list[Row]:
    """The from-scratch group: the trained runs and their ensembles; with several architectures, each one's runs and
    average ensemble before them."""
    group = ensemble["groups"][SCRATCH]
    runs = group["members"]
    single = {k: [v[ensemble["members"].index(r)] for r in runs] for k, v in ensemble["single_members"].items()}
    architectures = [name for name in ensemble["groups"] if name not in GROUP_NAMES]
    rows = []
    for architecture in architectures:
        members = ensemble["groups"][architecture]["members"]
        mine = {k: [v[runs.index(r)] for r in members] for k, v in single.items()}
        label = f"{architecture}, {len(members)} single run{'s' * (len(members) > 1)}"
        rows.append(Row(f"{label} (mean ± SE)", "spectrogram", *(pct_se(mine[k]) for k in KEYS)))
        if len(members) > 1:
            average = ensemble["groups"][architecture]["methods"]["average"]
            rows.append(scored(f"ensemble of the {architecture} runs: average", "spectrogram", average))
    kind = f"runs of {len(architectures)} architectures" if architectures else "2D CNN"
    rows += [
        Row(
            f"{kind}, {len(runs)} single runs (mean ± SE)",
            "spectrogram",
            pct_se(single["test_clip_accuracy"]),
            pct_se(single["test_file_accuracy"]),
            pct_se(single["val_file_accuracy"]),
            "–" if architectures else study.CNN2D_RUNS,
        )
    ]
    best = max(range(len(runs)), key=lambda i: single["val_file_accuracy"][i])  # chosen on validation, never test
    rows.append(
        Row(
            f"{kind}, best run by validation ({runs[best]})",
            "spectrogram",
            pct(single["test_clip_accuracy"][best]),
            pct(single["test_file_accuracy"][best]),
            pct(single["val_file_accuracy"][best]),
            "–" if architectures else f"{max(study.CNN2D_SINGLE_RUNS):.1f} % (best by test)",
        )
    )
    for method, m in group["methods"].items():
        figure = study.ENSEMBLES.get(method)
        rows.append(scored(f"ensemble: {method}", "spectrogram", m, f"{figure:.2f} %" if figure else "–"))
    return rows


def pretrained_rows(ensemble: dict) -> list[Row]:
    """The heads on pretrained embeddings, their ensembles, and the ensembles of every member: no published figure applies."""
    rows = []
    for name in ensemble["pretrained_members"]:
        i = ensemble["members"].index(name)
        single = {k: v[i] for k, v in ensemble["single_members"].items()}
        rows.append(scored(f"{name} (linear head)", f"{name.removeprefix('head-')} embedding", single, validation=ON_ROWS))
    for group, input_ in ((PRETRAINED, "embeddings"), (ALL, "spectrogram + embeddings")):
        g = ensemble["groups"].get(group)
        if g and len(g["members"]) > 1:
            rows += [
                scored(f"ensemble of {GROUP_NAMES[group]}: {method}", input_, m, validation=ON_ROWS) for method, m in g["methods"].items()
            ]
    return rows


def results_markdown(data: dict, baselines: list[Row], cnns: list[Row], pretrained: list[Row], corpus: str | None) -> str:
    """The results tables; the published column only when ``corpus`` is the one the figures belong to."""
    files, clips = data["files"], data["clips"]
    published = corpus == PUBLISHED_FOR
    intro = (
        f"# Results{f' on {corpus}' if corpus else ''}\n\n"
        f"Test: {clips['test']} clips ({files['test']:,} files), never used to choose anything. "
        f"Validation: {clips['val']} clips from the training folds, whole source recordings only. "
        f"Training: {clips['train']} clips ({files['train']:,} files).\n\n"
    )
    if published:
        intro += (
            "Published figures are context, not a like-for-like score: the study's are on its own random split, whose "
            "test set also chose its epochs and ensemble weights; the dataset paper's are 5-fold cross-validation.\n\n"
        )
    sections = [
        ("Baselines", "", baselines),
        ("Spectrogram CNNs and their ensembles, trained from scratch", "", cnns),
        ("With pretrained embeddings (trained on outside data)", PRETRAINED_NOTE, pretrained),
    ]
    return intro + "\n".join(
        f"## {title}\n\n{note}" + "\n".join(header(published) + [r.markdown(published) for r in rows]) + "\n"
        for title, note, rows in sections
        if rows
    )


def per_class_accuracy(predictions: pd.DataFrame) -> pd.DataFrame:
    """Clips, correct and accuracy per actual class, from ``actual``/``predicted`` columns."""
    table = predictions.assign(correct=predictions["actual"] == predictions["predicted"]).groupby("actual")["correct"]
    return pd.DataFrame({"clips": table.size(), "correct": table.sum(), "accuracy": table.mean()}).rename_axis("class")


def weights_markdown(ensemble: dict) -> str:
    group = ensemble["groups"][every_member(ensemble)]
    members = group["members"]
    lines = ["| method | " + " | ".join(members) + " | validation log-loss | validation accuracy |", "|---|" + "---:|" * (len(members) + 2)]
    for method, m in group["methods"].items():
        if m["weights"] is not None:
            weights = " | ".join(f"{w:.3f}" for w in m["weights"])
            lines.append(f"| {method} | {weights} | {m['val_log_loss']:.4f} | {pct(m['val_accuracy'])} |")
    return "\n".join(lines) + "\n"


def learning_curves_png(histories: dict[str, pd.DataFrame], path: Path) -> None:
    """Loss and accuracy per epoch of each run (validation solid, train dashed), side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for i, (name, history) in enumerate(histories.items()):
        for ax, metric in zip(axes, ("loss", "accuracy")):
            ax.plot(history["epoch"], history[metric], linestyle="--", color=f"C{i % 10}", alpha=0.5)
            ax.plot(history["epoch"], history[f"val_{metric}"], color=f"C{i % 10}", label=name)
    for ax, metric in zip(axes, ("loss", "accuracy")):
        ax.set_xlabel("epoch"), ax.set_ylabel(metric), ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, title="validation solid, train dashed", title_fontsize=7)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=90, metadata={"Software": None})
    plt.close(fig)


def figures_markdown(ensemble: dict, chosen: str, predictions: pd.DataFrame) -> str:
    classes = per_class_accuracy(predictions)
    group = every_member(ensemble)
    m = ensemble["groups"][group]["methods"][chosen]
    best = ensemble["best"]
    lines = [
        f"## The chosen ensemble: {chosen}, over {GROUP_NAMES[group]}",
        "",
        f"Test: {pct(m['test_clip_accuracy'])} of clips, {pct(m['test_file_accuracy'])} of files; validation "
        f"{pct(m['val_accuracy'])}, log-loss {m['val_log_loss']:.4f}. Least validation log-loss is `{best['method']}` over "
        f"{GROUP_NAMES[best['group']]} "
        "(what `audioclass predict` and the model registry use).",
        "",
        "![Confusion matrix of the chosen ensemble, test clips](figures/confusion.png)",
        "",
        "| class | test clips | correct | accuracy |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {r.Index} | {r.clips} | {r.correct} | {pct(r.accuracy)} |" for r in classes.itertuples()]
    lines += [
        "",
        "## Ensemble weights (fitted on validation)",
        "",
        weights_markdown(ensemble),
        "## Learning curves",
        "",
        "![Loss and accuracy per epoch of every run](figures/learning_curves.png)",
        "",
        "## The data, by eye",
        "",
        "![Example spectrograms, one row per class](spectrogram_grid.png)",
        "",
    ]
    return "\n".join(lines)


def headline_metrics(data: dict, ensemble: dict) -> dict:
    """The few figures ``dvc metrics show`` prints, one row that fits a terminal with two pretrained heads.

    ``ensemble``: the group and method validation chose, with its validation
    log-loss (``val_loss``) and accuracy (``val``), on the rows of the kind test
    scores, and its test accuracy (clips); ``cnn_runs``: the CNN runs' mean test
    accuracy; ``head_<model>``: each pretrained head's test accuracy;
    ``clips``: train/val/test clips. The detail, standard errors included,
    stays in each stage's own file (``dvc metrics show
    reports/ensemble/ensemble.json``).
    """
    best = ensemble["best"]
    chosen = ensemble["groups"][best["group"]]["methods"][best["method"]]
    test = dict(zip(ensemble["members"], ensemble["single_members"]["test_clip_accuracy"]))
    runs = [a for name, a in test.items() if not is_pretrained(name)]
    headline = {
        "ensemble": f"{best['group']}/{best['method']}",
        "val_loss": chosen["val_log_loss"],
        "val": chosen["val_accuracy"],
        "test": chosen["test_clip_accuracy"],
    }
    if runs:
        headline["cnn_runs"] = mean_se(runs)[0]
    headline |= {name.replace("-", "_"): a for name, a in test.items() if is_pretrained(name)}
    headline["clips"] = "/".join(str(data["clips"][split]) for split in ("train", "val", "test"))
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in headline.items()}
