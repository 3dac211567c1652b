"""Ensemble methods by hand, and every swarm optimiser against uniform weights."""

import numpy as np
import pandas as pd
import pytest

from audioclass.ensembling import (
    EnsembleConfig,
    Runs,
    combine,
    cross_entropy,
    ensemble,
    every_member,
    fit_simplex,
    fit_weights,
    held_out_log_loss,
    markdown,
    member_names,
    normalise,
    validation_rows,
)
from audioclass.errors import ConfigError
from audioclass.evaluation import accuracy
from audioclass.swarm import OPTIMISERS


def cfg(**overrides) -> EnsembleConfig:
    base = dict(
        members="all",
        optimisers=tuple(OPTIMISERS),
        population=20,
        iterations=30,
        seed=0,
        chosen="average",
        choose="in_sample",
        target_precision=0.95,
    )
    return EnsembleConfig(**{**base, **overrides})


def test_cross_entropy_is_the_true_class_mean_negative_log_probability_clipped_at_zero():
    probs = np.array([[0.5, 0.5], [0.0, 1.0], [0.2, 0.8]])
    assert cross_entropy(probs, np.array([0, 1, 1])) == pytest.approx(-(np.log(0.5) + np.log(1.0) + np.log(0.8)) / 3)
    # A true class given probability 0 costs -log(1e-7), not infinity.
    assert cross_entropy(probs, np.array([0, 0, 1])) == pytest.approx(-(np.log(0.5) + np.log(1e-7) + np.log(0.8)) / 3)


def test_average_maximum_vote_by_hand():
    # Two samples, three classes, three runs.
    probs = np.array(
        [
            [[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]],
            [[0.1, 0.8, 0.1], [0.4, 0.3, 0.3]],
            [[0.5, 0.4, 0.1], [0.1, 0.1, 0.8]],
        ]
    )
    np.testing.assert_allclose(combine(probs, "average"), [[0.4, 0.5, 0.1], [0.7 / 3, 0.3, 1.4 / 3]])
    assert combine(probs, "average").argmax(1).tolist() == [1, 2]
    assert combine(probs, "maximum").argmax(1).tolist() == [1, 2]  # 0.8 is the largest value in each row
    # Votes: sample 0 → classes 0, 1, 0 → class 0; sample 1 → 1, 0, 2 → a three-way tie, broken by summed probability (class 2: 1.4).
    assert combine(probs, "vote").argmax(1).tolist() == [0, 2]
    np.testing.assert_allclose(combine(probs, "weighted", np.array([0, 1, 0])), probs[1])


def test_normalise():
    np.testing.assert_allclose(normalise(np.array([1.0, 3.0])), [0.25, 0.75])
    np.testing.assert_allclose(normalise(np.array([-1.0, 0.0])), [0.5, 0.5])


def constructed(n=600, n_classes=10, seed=0):
    """(probs (3, n, k), labels): a useless run, a strong run, and one good only on classes 0–4."""
    rng = np.random.default_rng(seed)
    y = rng.integers(n_classes, size=n)
    onehot = np.eye(n_classes)[y]
    useless = rng.dirichlet(np.ones(n_classes), size=n)
    strong_hit = rng.random(n) < 0.7
    strong = np.where(strong_hit[:, None], 0.5 * onehot + 0.5 * rng.dirichlet(np.ones(n_classes), n), rng.dirichlet(np.ones(n_classes), n))
    partial = np.where((y < 5)[:, None], 0.9 * onehot + 0.01, rng.dirichlet(np.ones(n_classes), n))
    return np.stack([useless, strong, partial / partial.sum(1, keepdims=True)]), y


def log_loss(probs: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> float:
    return cross_entropy(combine(probs, "weighted", weights), y)


def test_the_simplex_optimum_gives_a_right_and_confident_member_nearly_all_the_weight():
    rng = np.random.default_rng(0)
    y = rng.integers(10, size=200)
    confident = np.full((200, 10), 0.01)
    confident[np.arange(200), y] = 0.91
    noise = rng.dirichlet(np.ones(10), size=(2, 200))
    probs = np.stack([noise[0], confident, noise[1]])
    weights, calls = fit_simplex(probs, y)
    assert weights[1] > 0.98 and weights.sum() == pytest.approx(1) and weights.min() >= 0 and calls > 0
    # An accuracy fitness could not tell these apart: any weight over 0.5 on the confident member is 100 % right.
    assert accuracy(combine(probs, "weighted", np.array([0.2, 0.6, 0.2])), y) == 1.0
    assert log_loss(probs, y, weights) < log_loss(probs, y, np.array([0.2, 0.6, 0.2])) - 0.1


def test_the_simplex_optimum_is_a_minimum_of_the_log_loss():
    probs, y = constructed()
    weights, _ = fit_simplex(probs, y)
    best = log_loss(probs, y, weights)
    rng = np.random.default_rng(3)
    for other in rng.dirichlet(np.ones(3), size=200):  # no point of the simplex does better
        assert log_loss(probs, y, other) >= best - 1e-6
    for i in range(3):  # nor does a small step towards any single member
        nudged = 0.95 * weights + 0.05 * np.eye(3)[i]
        assert log_loss(probs, y, nudged) >= best - 1e-6


@pytest.mark.parametrize("name", sorted(OPTIMISERS))
def test_every_optimiser_minimises_log_loss_near_the_simplex_optimum(name):
    probs, y = constructed()
    weights, calls = fit_weights(probs, y, cfg(), name)
    optimum, _ = fit_simplex(probs, y)
    fitted, uniform = log_loss(probs, y, weights), log_loss(probs, y)
    assert fitted < uniform - 0.05, (name, fitted, uniform, weights)
    assert fitted <= log_loss(probs, y, optimum) + 0.02, (name, weights, optimum)
    assert weights[0] < weights[1] and weights.min() >= 0 and weights.sum() == pytest.approx(1)
    assert 20 * 30 * 0.9 <= calls <= 20 * 31  # the shared budget: population × (iterations + 1)
    # The weights generalise: they also beat uniform on fresh data from the same runs' behaviour.
    probs2, y2 = constructed(seed=1)
    assert log_loss(probs2, y2, weights) < log_loss(probs2, y2)
    assert accuracy(combine(probs2, "weighted", weights), y2) > accuracy(combine(probs2, "average"), y2)


@pytest.mark.parametrize("name", sorted(OPTIMISERS))
def test_optimisers_are_seeded(name):
    probs, y = constructed(n=200)
    a, _ = fit_weights(probs, y, cfg(iterations=5), name)
    b, _ = fit_weights(probs, y, cfg(iterations=5), name)
    np.testing.assert_array_equal(a, b)


def validation_set(n_clips=100, copies=4, seed=0):
    """(probs (3, n_clips × copies, k), index): each clip's copies in a row, copy 0 its original recording, ids shuffled."""
    probs, y = constructed(n=n_clips * copies, seed=seed)
    ids = np.random.default_rng(seed).permutation(n_clips)
    index = pd.DataFrame({"clip_id": [f"c{ids[i // copies]:03d}" for i in range(len(y))], "copy": np.arange(len(y)) % copies, "label": y})
    index["label"] = index.groupby("clip_id")["label"].transform("first")  # a clip's copies share its label
    return probs, index


def test_validation_rows_are_the_kind_test_scores():
    probs, index = validation_set()
    rows, labels = validation_rows(probs, index, "original")
    originals = index[index["copy"] == 0].sort_values("clip_id")
    assert rows.shape == (3, 100, 10) and labels.tolist() == originals["label"].tolist()
    np.testing.assert_array_equal(rows, probs[:, originals.index])
    means, mean_labels = validation_rows(probs, index, "all")
    first = index[index["clip_id"] == "c000"].index
    np.testing.assert_allclose(means[:, 0], probs[:, first].mean(axis=1), rtol=1e-6)
    assert mean_labels.tolist() == labels.tolist()


def test_weights_are_fitted_on_the_rows_test_copies_names():
    probs, index = validation_set()
    runs = Runs(["run-1", "run-2", "run-3"], probs, probs, [{"val_file_accuracy": 0, "test_clip_accuracy": 0, "test_file_accuracy": 0}] * 3)
    copies = (index["copy"] > 0).to_numpy()
    scrambled = probs.copy()
    scrambled[:, copies] = np.random.default_rng(9).dirichlet(np.ones(10), size=(3, copies.sum()))
    other = Runs(runs.names, scrambled, probs, runs.metrics)
    c = cfg(optimisers=("jaya",))
    weights = lambda r, copies_: ensemble(r, index, index, c, copies_)[0]["groups"]["from_scratch"]["methods"]  # noqa: E731
    # Originals: what the augmented copies predict changes nothing; the mean over copies: it does.
    assert weights(runs, "original")["simplex"]["weights"] == weights(other, "original")["simplex"]["weights"]
    assert weights(runs, "original")["swarm_jaya"]["weights"] == weights(other, "original")["swarm_jaya"]["weights"]
    assert weights(runs, "all")["simplex"]["weights"] != weights(other, "all")["simplex"]["weights"]


def test_stage_core_chooses_by_validation_log_loss_and_never_reads_test():
    probs, index = validation_set()
    runs = Runs(
        ["run-1", "run-2", "run-3"],
        probs,
        probs,
        [{"val_file_accuracy": a, "test_clip_accuracy": 0, "test_file_accuracy": 0} for a in (0.1, 0.7, 0.5)],
    )
    report, predictions = ensemble(runs, index, index, cfg(optimisers=("de", "jaya")), "original")
    assert list(report["groups"]) == ["from_scratch"]  # no pretrained members: one group
    assert report["validation_rows"] == {"kind": "originals", "rows": 100}
    methods = report["groups"]["from_scratch"]["methods"]
    assert list(methods) == ["average", "maximum", "vote", "val_weighted", "simplex", "swarm_de", "swarm_jaya"]
    rows, labels = validation_rows(probs, index, "original")
    member_accuracy = [accuracy(r, labels) for r in rows]
    assert methods["val_weighted"]["weights"] == pytest.approx(list(np.array(member_accuracy) / sum(member_accuracy)), abs=1e-6)
    assert report["single_members"]["val_accuracy"] == member_accuracy
    assert methods["average"]["val_log_loss"] == pytest.approx(cross_entropy(rows.mean(axis=0), labels), abs=1e-6)
    assert methods["average"]["val_accuracy"] == accuracy(rows.mean(axis=0), labels)
    assert len(predictions) == 100
    best = min((m for m in methods if m not in ("maximum", "vote")), key=lambda m: methods[m]["val_log_loss"])
    assert report["best"] == {"group": "from_scratch", "method": best, "chosen_by": "in_sample"}
    assert methods[best]["val_log_loss"] <= methods["simplex"]["val_log_loss"] < methods["average"]["val_log_loss"]
    # Same weights whatever the test predictions are: test never chooses anything.
    shuffled = Runs(runs.names, probs, np.random.default_rng(5).permutation(probs, axis=1), runs.metrics)
    report2, _ = ensemble(shuffled, index, index, cfg(optimisers=("de", "jaya")), "original")
    for m in ("simplex", "swarm_de", "swarm_jaya"):
        assert report2["groups"]["from_scratch"]["methods"][m]["weights"] == methods[m]["weights"]
    assert report2["best"] == report["best"]
    # Each method is calibrated on the same rows: its temperature and minimum confidence are validation's too.
    for m in methods:
        first, again = (r["groups"]["from_scratch"]["methods"][m]["calibration"] for r in (report, report2))
        assert (first["temperature"], first["min_confidence"]) == (again["temperature"], again["min_confidence"])
    assert "Calibration: temperature" in markdown(report) and "Expected calibration error (10 bins) on test clips" in markdown(report)


def test_a_vote_is_never_chosen_though_its_normalised_scores_can_score_a_lower_log_loss():
    # Three members, each right but unsure (0.4 on the true class): a weighted mean stays at 0.4, while the vote's
    # three votes normalise to about 0.8. Its log-loss measures the normalisation, not the members.
    y = np.arange(60) % 10
    unsure = np.full((60, 10), 0.6 / 9)
    unsure[np.arange(60), y] = 0.4
    probs = np.stack([unsure, unsure, unsure])
    index = pd.DataFrame({"clip_id": [f"c{i:02d}" for i in range(60)], "copy": 0, "label": y})
    metrics = [{"val_file_accuracy": 1, "test_clip_accuracy": 1, "test_file_accuracy": 1}] * 3
    report, _ = ensemble(Runs(["run-1", "run-2", "run-3"], probs, probs, metrics), index, index, cfg(optimisers=("jaya",)), "original")
    methods = report["groups"]["from_scratch"]["methods"]
    assert methods["vote"]["val_log_loss"] < methods["average"]["val_log_loss"]
    assert report["best"]["method"] not in ("vote", "maximum")
    assert methods[report["best"]["method"]]["val_log_loss"] == pytest.approx(-np.log(0.4), abs=1e-4)


def test_pretrained_heads_form_their_own_group_beside_the_runs_and_all_members():
    probs, index = validation_set()
    metrics = [{"val_file_accuracy": a, "test_clip_accuracy": 0, "test_file_accuracy": 0} for a in (0.1, 0.7, 0.5)]
    runs = Runs(["run-1", "run-2", "head-birdnet"], probs, probs, metrics)
    report, _ = ensemble(runs, index, index, cfg(optimisers=("jaya",)), "original")
    groups = report["groups"]
    assert {g: groups[g]["members"] for g in groups} == {
        "from_scratch": ["run-1", "run-2"],
        "pretrained": ["head-birdnet"],
        "all": ["run-1", "run-2", "head-birdnet"],
    }
    assert list(groups["pretrained"]["methods"]) == ["average"]  # one member: the member itself
    assert groups["pretrained"]["methods"]["average"]["val_file_accuracy"] == accuracy(probs[2], index["label"].to_numpy())
    assert len(groups["all"]["methods"]["swarm_jaya"]["weights"]) == 3 and report["pretrained_members"] == ["head-birdnet"]
    scores = [groups[g]["methods"][m]["val_log_loss"] for g in groups for m in groups[g]["methods"]]
    assert groups[report["best"]["group"]]["methods"][report["best"]["method"]]["val_log_loss"] == min(scores)


def test_a_head_predicting_validations_originals_only_pairs_with_runs_predicting_every_file(tmp_path):
    import json

    from audioclass.ensembling import load_runs
    from audioclass.errors import DataError

    probs, index = validation_set()
    originals = (index["copy"] == 0).to_numpy()
    metrics = {"val_file_accuracy": 0.5, "test_clip_accuracy": 0.5, "test_file_accuracy": 0.5}
    for name, val in (("run-1", probs[0]), ("run-2", probs[1]), ("head-birdnet", probs[2][originals])):
        (tmp_path / name).mkdir()
        np.save(tmp_path / name / "val_probs.npy", val)
        np.save(tmp_path / name / "test_probs.npy", probs[0])
        (tmp_path / name / "metrics.json").write_text(json.dumps(metrics))
    folders = [tmp_path / n for n in ("run-1", "run-2", "head-birdnet")]
    runs = load_runs(folders, index, "original")
    np.testing.assert_array_equal(runs.val[2][originals], probs[2][originals])
    assert np.isnan(runs.val[2][~originals]).all() and not runs.predict_every_file()
    # The ensemble reads the originals alone, so it fits what it would had the head predicted every file.
    everything = Runs(runs.names, probs, runs.test, runs.metrics)
    report, full = (ensemble(r, index, index, cfg(optimisers=("jaya",)), "original")[0] for r in (runs, everything))
    for group in ("pretrained", "all"):
        for method, r in report["groups"][group]["methods"].items():
            assert r["weights"] == full["groups"][group]["methods"][method]["weights"]
            assert r["val_log_loss"] == full["groups"][group]["methods"][method]["val_log_loss"]
            assert r["val_file_accuracy"] is None  # not every file has a prediction of the head
    assert report["groups"]["from_scratch"]["methods"]["average"]["val_file_accuracy"] == accuracy(probs[:2].mean(axis=0), index["label"])
    # Clip means need every copy of the head too, and a row count of neither kind names the file.
    with pytest.raises(DataError, match=r"head-birdnet/val_probs.npy: 100 rows; expected one per validation file \(400\)"):
        load_runs(folders, index, "all")


def test_members_are_checked_against_the_runs_and_embedding_models():
    runs = ["run-1", "crnn-1"]
    assert member_names(cfg(), runs, ["birdnet"], "p.yaml") == ["run-1", "crnn-1", "head-birdnet"]
    assert member_names(cfg(members=("crnn-1", "head-birdnet")), runs, ["birdnet"], "p.yaml") == ["crnn-1", "head-birdnet"]
    with pytest.raises(ConfigError, match=r"^p.yaml: ensemble.members: head-birdnet: not trained by this params file; expected"):
        member_names(cfg(members=("run-1", "head-birdnet")), runs, [], "p.yaml")  # embed.models: [] leaves no head
    with pytest.raises(ConfigError, match=r"ensemble.members: run-2: not trained by this params file"):
        member_names(cfg(members=("run-1", "run-2")), runs, [], "p.yaml")
    with pytest.raises(ConfigError, match=r"ensemble.members: expected at least 2 members"):
        member_names(cfg(), ["run-1"], [], "p.yaml")


def test_runs_of_several_architectures_are_ensembled_apart_and_mixed():
    probs, index = validation_set()
    metrics = [
        {"val_file_accuracy": a, "test_clip_accuracy": 0, "test_file_accuracy": 0, "architecture": arch}
        for a, arch in ((0.1, "compact_cnn"), (0.7, "crnn"), (0.5, "compact_cnn"))
    ]
    report, _ = ensemble(Runs(["run-1", "crnn-1", "run-2"], probs, probs, metrics), index, index, cfg(optimisers=("jaya",)), "original")
    groups = report["groups"]
    assert {g: groups[g]["members"] for g in groups} == {
        "compact_cnn": ["run-1", "run-2"],
        "crnn": ["crnn-1"],
        "from_scratch": ["run-1", "crnn-1", "run-2"],
    }
    pure = probs[[0, 2]].mean(axis=0)
    assert groups["compact_cnn"]["methods"]["average"]["val_file_accuracy"] == accuracy(pure, index["label"].to_numpy())
    assert "## From scratch: the crnn runs only" in markdown(report) and every_member(report) == "from_scratch"
    # One architecture: no group of its own, as before.
    same = [m | {"architecture": "compact_cnn"} for m in metrics]
    report, _ = ensemble(Runs(["run-1", "run-2", "run-3"], probs, probs, same), index, index, cfg(optimisers=("jaya",)), "original")
    assert list(report["groups"]) == ["from_scratch"]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"optimisers": ("pso2",)}, "optimisers: expected names from"),
        ({"chosen": "swarm_gwo", "optimisers": ("de",)}, "chosen: expected one of"),
        ({"population": 2}, "population: expected an integer >= 4"),
        ({"members": "every"}, "members: expected all, or a list"),
        ({"members": ("run-1", "../cnn")}, "members: expected names of train.runs or head-<model>"),
    ],
)
def test_bad_config(change, message):
    with pytest.raises(ConfigError, match=message):
        cfg(**change)


def test_a_registry_failure_leaves_the_previous_outputs_as_they_were(tmp_path, monkeypatch):
    import yaml

    from audioclass import bundle
    from audioclass.stages import ensemble as stage
    from conftest import PROJECT, band_spectrograms, write_spectrogram_folder

    data = write_spectrogram_folder(tmp_path / "spectrograms", {"val": band_spectrograms(3, 2, 1), "test": band_spectrograms(3, 2, 2)})
    for seed in (1, 2):
        run = tmp_path / "models" / f"run-{seed}"
        run.mkdir(parents=True)
        for split in ("val", "test"):
            np.save(run / f"{split}_probs.npy", np.random.default_rng(seed).dirichlet(np.ones(3), 6).astype(np.float32))
        (run / "metrics.json").write_text(
            '{"val_file_accuracy": 0.5, "test_clip_accuracy": 0.5, "test_file_accuracy": 0.5, '
            '"class_names": ["class0", "class1", "class2"]}'
        )
    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    params["train"]["runs"] = {"run-1": {"seed": 1}, "run-2": {"seed": 2}}
    params["embed"]["models"] = []
    params["ensemble"].update(optimisers=["jaya"], chosen="swarm_jaya", population=4, iterations=2)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = tmp_path / "ensemble"
    out.mkdir()
    (out / "ensemble.json").write_text("from an earlier, successful run")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")

    def registry_down(*args, **kwargs):
        raise RuntimeError("registry down")

    monkeypatch.setattr(bundle, "register_ensemble", registry_down)
    with pytest.raises(RuntimeError, match="registry down"):
        stage.main(
            ["--params", str(tmp_path / "params.yaml"), "--models", str(tmp_path / "models"), "--data", str(data), "--out", str(out)]
        )
    assert sorted(p.name for p in out.iterdir()) == ["ensemble.json"]
    assert (out / "ensemble.json").read_text() == "from an earlier, successful run"


def test_held_out_log_loss_scores_each_group_of_sources_with_weights_fitted_on_the_others():
    probs, y = constructed(n=120)
    sources = np.array([f"s{i // 2:03d}" for i in range(120)])  # two rows a source: a source never straddles groups
    got = held_out_log_loss(probs, y, sources, seed=3)
    order = np.random.default_rng(3).permutation(np.unique(sources))
    group = np.array([{s: i % 4 for i, s in enumerate(order)}[s] for s in sources])
    mixed = np.empty(probs.shape[1:])
    for g in range(4):
        weights, _ = fit_simplex(probs[:, group != g], y[group != g])
        mixed[group == g] = combine(probs[:, group == g], "weighted", weights)
    assert got == pytest.approx(cross_entropy(mixed, y), abs=1e-6)
    assert got > cross_entropy(combine(probs, "weighted", fit_simplex(probs, y)[0]), y)  # worse than in sample, as it should be
    assert held_out_log_loss(probs, y, np.array(["a", "b", "c"] * 40), seed=3) is None  # three sources cannot make four groups


def test_choose_held_out_ships_the_group_of_least_held_out_log_loss():
    probs, index = validation_set()
    index["source_id"] = index["clip_id"]
    metrics = [{"val_file_accuracy": 0, "test_clip_accuracy": 0, "test_file_accuracy": 0}] * 3
    runs = Runs(["run-1", "run-2", "head-birdnet"], probs, probs, metrics)
    report, _ = ensemble(runs, index, index, cfg(optimisers=("jaya",), choose="held_out"), "original")
    held_out = {g: v["held_out_log_loss"] for g, v in report["groups"].items()}
    assert set(held_out) == {"from_scratch", "pretrained", "all"} and None not in held_out.values()
    assert report["best"]["chosen_by"] == "held_out" and report["best"]["group"] == min(held_out, key=held_out.get)
    in_sample, _ = ensemble(runs, index, index, cfg(optimisers=("jaya",)), "original")
    assert in_sample["best"]["chosen_by"] == "in_sample"
    assert all(v["held_out_log_loss"] is None for v in in_sample["groups"].values())


def test_the_report_says_when_no_threshold_reaches_the_target_precision():
    from audioclass.ensembling import calibration_text

    unreached = {"temperature": 1.2, "val_ece": [0.1, 0.05], "test_ece": [0.2, 0.1], "min_confidence": None, "target_precision": 0.95}
    assert calibration_text(unreached | {"test_kept": 1.0, "test_precision": 0.6}).endswith(
        "No threshold makes validation's rows 95 % precise: no minimum confidence is applied."
    )
