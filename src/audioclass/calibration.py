"""Confidence that means something: temperature scaling, its calibration error, and a minimum confidence.

An ensemble's probabilities are a weighted mean of its members', each member
trained to be sure of its training clips, so they need not be calibrated: of
the clips given 0.8, more or fewer than 80 % may be right. Temperature scaling
(Guo et al., 2017) fits one number ``T`` on validation, by log-loss, and maps
probabilities ``p`` to ``p ** (1 / T)``, renormalised: it changes how sure the
ensemble is, never which class it picks. ``T > 1`` softens, ``T < 1`` sharpens.

The minimum confidence is chosen on validation by a rule fixed before it was
measured: the lowest threshold at which the calibrated ensemble's precision on
validation's rows (the accuracy of the rows it keeps) reaches
``ensemble.target_precision``.

What the number does not mean: a sound of none of the classes is not a
validation row, and can still be given a confident class
(``benchmarks/calibration.py`` measures how often).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import softmax

EPS = 1e-7  # the least probability a log-loss counts: a sure miss costs -log(1e-7) ≈ 16, not infinity
TEMPERATURES = (0.05, 20.0)  # the search's bounds: far beyond any temperature a sane ensemble needs
BINS = 10  # equal-width confidence bins of the expected calibration error


def tempered(probs: np.ndarray, temperature: float) -> np.ndarray:
    """``probs`` (n, n_classes), rows summing to 1, as ``probs ** (1 / temperature)`` renormalised; argmax unchanged."""
    return softmax(np.log(np.clip(probs, EPS, 1)) / temperature, axis=1)


def cross_entropy(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-probability of each row's true class (log-loss), clipped at ``EPS``."""
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], EPS, 1))))


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The temperature of least log-loss of :func:`tempered` ``probs`` on these rows (a bounded search on log T)."""
    result = minimize_scalar(
        lambda log_t: cross_entropy(tempered(probs, float(np.exp(log_t))), labels), bounds=np.log(TEMPERATURES), method="bounded"
    )
    return float(np.exp(result.x))


def calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> float:
    """Expected calibration error: over equal-width bins of the top probability, the gap between accuracy and mean
    confidence, weighted by the bin's share of rows. 0 is calibrated."""
    confidence, right = probs.max(axis=1), probs.argmax(axis=1) == labels
    bin_of = np.minimum((confidence * bins).astype(int), bins - 1)
    gaps = [abs(right[bin_of == b].mean() - confidence[bin_of == b].mean()) * np.mean(bin_of == b) for b in np.unique(bin_of)]
    return float(np.sum(gaps))


def least_confidence(probs: np.ndarray, labels: np.ndarray, target_precision: float) -> float | None:
    """The lowest threshold on the top probability at which the rows kept (top probability ≥ it) are right at least
    ``target_precision`` of the time; 0 when every row together is; None when no threshold reaches it."""
    confidence, right = probs.max(axis=1), probs.argmax(axis=1) == labels
    order = np.argsort(-confidence, kind="stable")
    precision = np.cumsum(right[order]) / np.arange(1, len(order) + 1)  # of the k most confident rows, k = 1 … n
    reached = np.flatnonzero(precision >= target_precision)
    if not len(reached):
        return None
    k = reached[-1]  # the most rows kept at that precision: the lowest threshold
    if k == len(order) - 1:
        return 0.0
    # Rounded down to 4 places, so the k-th row is kept however the threshold is printed.
    return round(math.floor(float(confidence[order[k]]) * 1e4) / 1e4, 4)


def calibrate(val: np.ndarray, y_val: np.ndarray, test: np.ndarray, y_test: np.ndarray, target_precision: float) -> dict:
    """A method's temperature and minimum confidence, fitted on its validation rows, and what they do on test.

    val, test : (n, n_classes) the method's probabilities on validation's rows and on test's clips
    """
    temperature = fit_temperature(val, y_val)
    val_after, test_after = tempered(val, temperature), tempered(test, temperature)
    threshold = least_confidence(val_after, y_val, target_precision)
    kept = test_after.max(axis=1) >= (threshold or 0.0)
    right = test_after.argmax(axis=1) == y_test
    return {
        "temperature": round(temperature, 4),
        "val_ece": [round(calibration_error(val, y_val), 4), round(calibration_error(val_after, y_val), 4)],
        "test_ece": [round(calibration_error(test, y_test), 4), round(calibration_error(test_after, y_test), 4)],
        "min_confidence": threshold,
        "target_precision": target_precision,
        "test_kept": round(float(kept.mean()), 4),
        "test_precision": round(float(right[kept].mean()), 4) if kept.any() else None,
    }
