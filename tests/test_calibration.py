"""Calibration: a temperature fitted by log-loss, the error it leaves, and a minimum confidence chosen by a fixed rule."""

import numpy as np
import pytest
from scipy.special import softmax

from audioclass.calibration import calibrate, calibration_error, fit_temperature, least_confidence, tempered


def overconfident(n: int, temperature: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows whose labels are drawn from softmax(z), reported as softmax(z / temperature): sure beyond their accuracy."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1.5, (n, 5))
    labels = np.array([rng.choice(5, p=p) for p in softmax(logits, axis=1)])
    return softmax(logits / temperature, axis=1), labels


def test_tempering_changes_how_sure_never_which_class():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.5, 0.4]])
    np.testing.assert_allclose(tempered(probs, 1.0), probs, atol=1e-6)
    softer, sharper = tempered(probs, 2.0), tempered(probs, 0.5)
    assert (softer.argmax(axis=1) == probs.argmax(axis=1)).all() and (sharper.argmax(axis=1) == probs.argmax(axis=1)).all()
    assert (softer.max(axis=1) < probs.max(axis=1)).all() and (sharper.max(axis=1) > probs.max(axis=1)).all()
    np.testing.assert_allclose(softer.sum(axis=1), 1, atol=1e-6)


def test_the_fitted_temperature_undoes_overconfidence_and_the_error_falls():
    probs, labels = overconfident(4000, temperature=0.4)
    fitted = fit_temperature(probs, labels)
    assert fitted == pytest.approx(1 / 0.4, rel=0.1)
    assert calibration_error(tempered(probs, fitted), labels) < 0.03 < 0.1 < calibration_error(probs, labels)


def test_the_calibration_error_is_the_row_weighted_gap_between_confidence_and_accuracy():
    sure_and_right = np.array([[1.0, 0.0]] * 4)
    assert calibration_error(sure_and_right, np.zeros(4, int)) == 0
    ninety = np.array([[0.9, 0.1]] * 4)
    assert calibration_error(ninety, np.array([0, 0, 1, 1])) == pytest.approx(0.4)  # 90 % sure, 50 % right
    mixed = np.array([[0.95, 0.05], [0.95, 0.05], [0.55, 0.45], [0.55, 0.45]])  # two bins, each half the rows
    assert calibration_error(mixed, np.array([0, 0, 0, 1])) == pytest.approx(0.5 * 0.05 + 0.5 * 0.05)


@pytest.mark.parametrize(
    "target, expected",
    [
        (0.75, 0.0),  # every row together is 75 % right: nothing is dropped
        (0.8, 0.8),  # the two most confident rows are right; with the third, 67 %
        (1.0, 0.8),
    ],
)
def test_the_minimum_confidence_is_the_lowest_that_reaches_the_target_precision(target, expected):
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4]])
    labels = np.array([0, 0, 1, 0])  # right, right, wrong, right
    assert least_confidence(probs, labels, target) == expected


def test_no_minimum_confidence_when_even_the_surest_row_is_wrong():
    assert least_confidence(np.array([[0.9, 0.1], [0.6, 0.4]]), np.array([1, 0]), 0.95) is None


def test_calibrating_a_method_reports_test_before_and_after_and_fits_on_validation_only():
    val, y_val = overconfident(600, temperature=0.5, seed=1)
    test, y_test = overconfident(600, temperature=0.5, seed=2)
    report = calibrate(val, y_val, test, y_test, 0.9)
    shuffled = calibrate(val, y_val, test, np.roll(y_test, 1), 0.9)  # test's labels choose nothing
    assert report["temperature"] == shuffled["temperature"] and report["min_confidence"] == shuffled["min_confidence"]
    assert report["test_ece"][1] < report["test_ece"][0] and report["val_ece"][1] < report["val_ece"][0]
    kept = tempered(test, report["temperature"]).max(axis=1) >= report["min_confidence"]
    assert report["test_kept"] == pytest.approx(kept.mean(), abs=1e-4) and 0 < report["test_kept"] < 1
    assert report["test_precision"] >= 0.8  # what validation's 90 % rule gives on unseen rows of the same kind
