"""Figures people would rather look at than read: confusion matrices."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def confusion_png(matrix: list[list[int]], class_names: list[str], path: Path, title: str) -> None:
    """A labelled confusion matrix (rows: actual, columns: predicted) with counts in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * len(class_names), 0.8 + 0.5 * len(class_names)))
    ax.imshow(counts, cmap="Blues")
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(class_names)), class_names, fontsize=8)
    ax.set_xlabel("predicted"), ax.set_ylabel("actual")
    for (i, j), n in np.ndenumerate(counts):
        if n:
            ax.text(j, i, str(n), ha="center", va="center", fontsize=7, color="white" if n > counts.max() / 2 else "black")
    accuracy = np.trace(counts) / max(counts.sum(), 1)
    ax.set_title(f"{title} (accuracy {100 * accuracy:.1f} %)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=90, metadata={"Software": None})
    plt.close(fig)
