"""Scores shared by every model stage and the ensemble.

``probs`` are (n_files, n_classes) rows aligned with a split's ``index.csv``.
File level scores every augmented file; clip level first averages each clip's
probabilities over its augmented copies (test-time averaging), then scores
one prediction per clip.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, f1_score


def clip_level(probs: np.ndarray, index: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(clip ids, mean probabilities per clip (n_clips, n_classes), label per clip), clips sorted by id."""
    frame = pd.DataFrame(probs).assign(clip_id=index["clip_id"].to_numpy())
    mean = frame.groupby("clip_id", sort=True).mean()
    labels = index.drop_duplicates("clip_id").set_index("clip_id")["label"].reindex(mean.index)
    return mean.index.to_numpy(), mean.to_numpy(dtype=np.float32), labels.to_numpy()


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    return float((probs.argmax(axis=1) == labels).mean())


def test_scores(probs: np.ndarray, index: pd.DataFrame, class_names: tuple[str, ...]) -> dict:
    """Test accuracy (file and clip level), clip-level macro-F1 and confusion matrix (rows actual)."""
    _, clip, clip_labels = clip_level(probs, index)
    predicted = clip.argmax(axis=1)
    labels = list(range(len(class_names)))
    return {
        "test_file_accuracy": accuracy(probs, index["label"].to_numpy()),
        "test_clip_accuracy": accuracy(clip, clip_labels),
        "test_clip_macro_f1": float(f1_score(clip_labels, predicted, labels=labels, average="macro", zero_division=0)),
        "test_clip_confusion": confusion_matrix(clip_labels, predicted, labels=labels).tolist(),
        "class_names": list(class_names),
    }


def summarize(
    val_probs: np.ndarray, val_index: pd.DataFrame, test_probs: np.ndarray, test_index: pd.DataFrame, class_names: tuple[str, ...]
) -> dict:
    """Validation accuracy (file and clip level), then :func:`test_scores`."""
    _, val_clip, val_clip_labels = clip_level(val_probs, val_index)
    return {
        "val_file_accuracy": accuracy(val_probs, val_index["label"].to_numpy()),
        "val_clip_accuracy": accuracy(val_clip, val_clip_labels),
        **test_scores(test_probs, test_index, class_names),
    }


def clip_predictions(probs: np.ndarray, index: pd.DataFrame, class_names: tuple[str, ...]) -> pd.DataFrame:
    """Each clip's actual and predicted class name (clip level), clips sorted by id: a run's ``test_predictions.csv``."""
    _, clip_probs, clip_labels = clip_level(probs, index)
    return pd.DataFrame({"actual": [class_names[i] for i in clip_labels], "predicted": [class_names[i] for i in clip_probs.argmax(1)]})
