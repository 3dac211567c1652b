"""Training: one run (``fit_run``), shared by tuning and training, its refit and its predictions."""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from audioclass import tracking
from audioclass.config import nested_config, require
from audioclass.dataset import Data, Rows, Split
from audioclass.evaluation import accuracy, clip_level, summarize
from audioclass.models import ARCHITECTURES, CNN1D_BLOCKS, cnn1d

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelParams:
    architecture: str
    width: int  # compact_cnn, crnn: filters in the first conv block, doubled per block
    depth: int  # compact_cnn, crnn: conv blocks; transformer: encoder blocks
    dropout: float  # before the classifier; transformer: in every block too
    first_kernel: int  # the first convolution's kernel size; transformer: frames per token
    units: int  # crnn: GRU units each way; transformer: values per token
    heads: int  # transformer: attention heads, each of units // heads values

    def __post_init__(self):
        require(self.architecture in ARCHITECTURES, "architecture", f"one of {sorted(ARCHITECTURES)}", self.architecture)
        require(self.width >= 1, "width", "an integer >= 1", self.width)
        require(1 <= self.depth <= 6, "depth", "an integer in [1, 6]", self.depth)
        require(0 <= self.dropout < 1, "dropout", "a fraction in [0, 1)", self.dropout)
        require(self.first_kernel >= 1, "first_kernel", "an integer >= 1", self.first_kernel)
        require(self.units >= 1, "units", "an integer >= 1", self.units)
        require(1 <= self.heads <= self.units, "heads", f"an integer in [1, units = {self.units}]", self.heads)


@dataclass(frozen=True)
class FitParams:
    epochs: int
    batch_size: int
    learning_rate: float
    patience: int  # epochs without a better validation loss before stopping
    mixup_alpha: float  # 0: off; else each batch mixes with a shuffled copy of itself, weight ~ Beta(α, α)
    freq_masks: int  # SpecAugment: bands of up to freq_mask_width zeroed in each training example
    freq_mask_width: int
    time_masks: int  # SpecAugment: spans of up to time_mask_width frames zeroed
    time_mask_width: int
    ema_momentum: float  # 0: off; else validation and the kept model use a moving average of the weights
    label_smoothing: float  # 0: off; else targets give this share of probability mass evenly to every class

    def __post_init__(self):
        require(self.epochs >= 1, "epochs", "an integer >= 1", self.epochs)
        require(self.batch_size >= 1, "batch_size", "an integer >= 1", self.batch_size)
        require(0 < self.learning_rate < 1, "learning_rate", "a rate in (0, 1)", self.learning_rate)
        require(self.patience >= 1, "patience", "an integer >= 1", self.patience)
        require(self.mixup_alpha >= 0, "mixup_alpha", "a number >= 0 (0 turns mixup off)", self.mixup_alpha)
        for key in ("freq_masks", "freq_mask_width", "time_masks", "time_mask_width"):
            require(getattr(self, key) >= 0, key, "an integer >= 0 (0 turns masking off)", getattr(self, key))
        require(0 <= self.ema_momentum < 1, "ema_momentum", "a number in [0, 1) (0 turns averaging off)", self.ema_momentum)
        require(0 <= self.label_smoothing < 1, "label_smoothing", "a number in [0, 1) (0 turns smoothing off)", self.label_smoothing)


# A run's name is its folder under models/ and a DVC stage name (train@<name>); no dots: DVC reads
# train.runs.<name> as a key path. head-* names the pretrained members.
RUN_NAME = re.compile(r"(?!head-)[A-Za-z0-9][A-Za-z0-9_-]*")


@dataclass(frozen=True)
class RunSpec:
    """One entry of ``train.runs``: its seed, and the ``model`` / ``fit`` keys it changes."""

    seed: int
    model: dict
    fit: dict


@dataclass(frozen=True)
class Run:
    """One run as it trains: its name, seed and every hyperparameter."""

    name: str
    seed: int
    model: ModelParams
    fit: FitParams


@dataclass(frozen=True)
class TrainConfig:
    runs: dict  # name → {seed, and optionally model / fit: the keys of model / fit this run changes}
    refit: bool  # refit on train + val to the best validation epoch; that model predicts test
    model: ModelParams
    fit: FitParams

    def __post_init__(self):
        require(len(self.runs) >= 1, "runs", "at least one run: name → {seed, model, fit}", self.runs)
        seeds = {}
        for name in self.runs:
            run = self.run(name)  # every run's values checked here, not when its stage starts
            key = (run.seed, run.model, run.fit)
            require(key not in seeds, f"runs.{name}", f"a seed or values other than run {seeds.get(key)!r}'s", self.runs[name])
            seeds[key] = name

    def run(self, name: str) -> Run:
        """The run ``name``: ``model`` and ``fit`` with its own changes on top."""
        require(isinstance(name, str) and RUN_NAME.fullmatch(name) is not None, "runs", "run names of letters, digits, - and _", name)
        entry = self.runs[name]
        require(isinstance(entry, dict), f"runs.{name}", "a mapping: {seed, and optionally model, fit}", entry)
        spec = nested_config(RunSpec, {"model": {}, "fit": {}, **entry}, f"runs.{name}")
        model = nested_config(ModelParams, dataclasses.asdict(self.model) | spec.model, f"runs.{name}.model")
        fit = nested_config(FitParams, dataclasses.asdict(self.fit) | spec.fit, f"runs.{name}.fit")
        return Run(name, spec.seed, model, fit)


@dataclass(frozen=True)
class Hyperparameters:
    """What the tune stage chooses and the train stage uses: the file between them."""

    model: ModelParams
    fit: FitParams


def _rows_as_float32(x: np.ndarray | Rows) -> Callable[[Any], Any]:
    """A TensorFlow function from a tensor of row numbers to those rows of ``x`` as float32.

    Rows are read from ``x`` (an array, or the file's ``Rows``) as each batch is
    drawn, and become float32 there: memory holds batches, not a second copy of
    the split. float16 travels as its bits (uint16): oneDNN has no float16
    kernels without AVX-512, and a float16 tensor makes it log an error line,
    for nothing float16 arithmetic would save.
    """
    import tensorflow as tf

    take = x.take if isinstance(x, Rows) else functools.partial(np.take, x, axis=0)
    half = x.dtype == np.float16
    stored = tf.uint16 if half else tf.as_dtype(x.dtype)

    def read(rows):
        batch = tf.numpy_function(lambda r: take(r).view(np.uint16) if half else take(r), [rows], stored, stateful=False)
        batch.set_shape([None, *x.shape[1:]])
        return tf.cast(tf.bitcast(batch, tf.float16) if half else batch, tf.float32)

    return read


def _without_autotuning(dataset):
    """``dataset`` with tf.data's autotuning off: its buffers and parallelism are set by hand already.

    With it on, each epoch's iterator starts a tuning thread, and dropping the
    iterator at the epoch's end waits until that thread's sleep runs out. On two
    cores, one epoch in two or three of a ``compact_cnn`` run stalled that way
    for about 9 s with both cores idle (10.7 s epochs became 20.5 s).
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def _dataset(split: Split, batch_size: int, n_classes: int):
    """Batches of (x float32, one-hot y) in index order, for validation and prediction."""
    import tensorflow as tf

    rows_of, labels = _rows_as_float32(split.x), tf.constant(split.y)
    ds = tf.data.Dataset.range(len(split.y)).batch(batch_size)
    return _without_autotuning(ds.map(lambda rows: (rows_of(rows), tf.one_hot(tf.gather(labels, rows), n_classes))).prefetch(2))


def _training_dataset(split: Split, fit: FitParams, n_classes: int, *, seed: int):
    """Shuffled training batches with SpecAugment masks and mixup, as ``fit`` asks.

    Every random draw is a stateless op keyed by a per-batch seed from a seeded
    ``tf.data.Dataset.random`` stream, so a run is repeatable per seed and each
    epoch draws afresh. The shuffle permutes row numbers, and batches read
    their rows: a shuffle buffer of the examples themselves would hold a second
    copy of the training split.
    """
    import tensorflow as tf

    def masks(x, seeds, count, width, axis):
        # Zero up to `width` consecutive rows along `axis` (1: bands, 2: frames), `count` times per example.
        size = tf.shape(x)[axis]
        position = tf.reshape(tf.range(size), [-1, 1] if axis == 1 else [1, -1])[tf.newaxis, ..., tf.newaxis]
        keep = tf.ones_like(x, dtype=tf.bool)
        for k in range(count):
            draw = tf.random.stateless_uniform([tf.shape(x)[0], 2], seed=tf.stack([seeds[0], axis * 100 + k]))
            span = tf.cast(draw[:, 0] * (width + 1), tf.int32)[:, None, None, None]
            start = tf.cast(draw[:, 1] * tf.cast(size, tf.float32), tf.int32)[:, None, None, None]
            keep &= ~((position >= start) & (position < start + span))
        return tf.where(keep, x, tf.zeros_like(x))

    def augment(rows, seeds):
        x, y = rows_of(rows), tf.one_hot(tf.gather(labels, rows), n_classes)
        if fit.freq_masks and fit.freq_mask_width:
            x = masks(x, seeds, fit.freq_masks, fit.freq_mask_width, axis=1)
        if fit.time_masks and fit.time_mask_width:
            x = masks(x, seeds, fit.time_masks, fit.time_mask_width, axis=2)
        if fit.mixup_alpha:
            n = tf.shape(x)[0]
            gammas = [tf.random.stateless_gamma([n], seed=tf.stack([seeds[0], 1000 + i]), alpha=fit.mixup_alpha) for i in (0, 1)]
            lam = gammas[0] / (gammas[0] + gammas[1])
            lam = tf.maximum(lam, 1 - lam)  # the example keeps the larger share, so its own label dominates
            partner = tf.argsort(tf.random.stateless_uniform([n], seed=tf.stack([seeds[0], 2000])))
            x = lam[:, None, None, None] * x + (1 - lam[:, None, None, None]) * tf.gather(x, partner)
            y = lam[:, None] * y + (1 - lam[:, None]) * tf.gather(y, partner)
        return x, y

    rows_of, labels = _rows_as_float32(split.x), tf.constant(split.y)
    order = tf.data.Dataset.range(len(split.y)).shuffle(len(split.y), seed=seed, reshuffle_each_iteration=True)
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    return _without_autotuning(tf.data.Dataset.zip((order, seeds)).batch(fit.batch_size).map(augment).prefetch(2))


def _compiled_model(model_params: ModelParams, fit: FitParams, train: Split, n_classes: int, *, seed: int) -> tuple[Any, list]:
    """A fresh model compiled for ``fit`` on ``train``, and the callbacks its weight averaging needs."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    model = ARCHITECTURES[model_params.architecture](train.x.shape[1:], n_classes, model_params)
    steps = fit.epochs * -(-len(train.y) // fit.batch_size)
    # Cosine decay to zero over the planned epochs: the last epochs fine-tune at small steps.
    schedule = keras.optimizers.schedules.CosineDecay(fit.learning_rate, decay_steps=steps)
    # Polyak averaging: the weights' moving average moves more smoothly from epoch to epoch than the
    # weights themselves; over folds 1-4 it raised validation accuracy on every fold.
    averaging = {"use_ema": True, "ema_momentum": fit.ema_momentum} if fit.ema_momentum else {}
    # One-hot targets, so mixup's blended labels and plain ones share one loss. Smoothing applies to
    # validation too, so early stopping watches the loss that training minimises.
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=fit.label_smoothing)
    model.compile(optimizer=keras.optimizers.Adam(schedule, **averaging), loss=loss, metrics=["accuracy"])
    # Evaluation, and the weights kept at each epoch's end, use the averaged weights.
    return model, [keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if averaging else []


def fit_run(
    model_params: ModelParams, fit: FitParams, data: Data, *, seed: int, callbacks: tuple = (), verbose: int = 2
) -> tuple[Any, pd.DataFrame]:
    """Build and fit one model; returns (model at its best validation epoch, history per epoch).

    The same function serves ``dvc repro`` and Optuna, so tuning and training
    cannot drift apart. Deterministic per seed on one machine.
    """
    import keras

    model, swap = _compiled_model(model_params, fit, data.train, len(data.class_names), seed=seed)
    early = keras.callbacks.EarlyStopping(monitor="val_loss", patience=fit.patience, restore_best_weights=True)
    history = model.fit(
        _training_dataset(data.train, fit, len(data.class_names), seed=seed),
        validation_data=_dataset(data.val, 256, len(data.class_names)),
        epochs=fit.epochs,
        callbacks=[*swap, early, *callbacks],  # swap before early stopping, so the weights it keeps are the averaged ones
        shuffle=False,  # the tf.data pipeline shuffles, seeded
        verbose=verbose,
    )
    table = pd.DataFrame(history.history)
    table.insert(0, "epoch", np.arange(len(table)))
    return model, table


def refit_run(model_params: ModelParams, fit: FitParams, data: Data, *, epochs: int, seed: int, verbose: int = 2) -> Any:
    """A fresh model fitted on train + validation for the first ``epochs`` epochs of ``fit``'s schedule.

    Validation has chosen everything already (the values, and with ``epochs`` the
    point of the schedule to stop at), so the refit only adds its clips, a quarter
    more at the default split. Nothing is left to watch it: it stops where the
    validated run's best epoch was, with the learning rate where it was then.
    """
    everything = data.train_and_val()
    model, swap = _compiled_model(model_params, fit, everything, len(data.class_names), seed=seed)
    model.fit(
        _training_dataset(everything, fit, len(data.class_names), seed=seed), epochs=epochs, callbacks=swap, shuffle=False, verbose=verbose
    )
    return model


def predict(model: Any, split: Split) -> np.ndarray:
    """Class probabilities, (n_files, n_classes) float32, rows as the split's index."""
    return model.predict(_dataset(split, 256, model.output_shape[-1]), verbose=0).astype(np.float32)


@dataclass(frozen=True)
class TrainedRun:
    """One run: the model to keep, its learning curve, its predictions and its scores."""

    model: Any  # the validated model, or with ``refit`` the refitted one: what predicts test
    history: pd.DataFrame  # one row per epoch: loss, accuracy, val_loss, val_accuracy
    val_probs: np.ndarray  # (n_val_files, n_classes), always the validated model's: the refit has seen validation
    test_probs: np.ndarray  # (n_test_files, n_classes)
    metrics: dict  # summarize()'s scores, epochs_run, best_epoch (and test_clip_accuracy_before_refit with refit)


def train_run(run: Run, data: Data, *, refit: bool, callbacks: tuple = ()) -> TrainedRun:
    """Fit one run on train, choose its epoch on validation, refit on train + val if asked, and score it."""
    model, history = fit_run(run.model, run.fit, data, seed=run.seed, callbacks=callbacks)
    best_epoch = int(history["val_loss"].idxmin())
    # Validation figures, and the ensemble's weights, come from the validated model: the refit has seen validation.
    val_probs = predict(model, data.val)
    before_refit = {}
    if refit:
        # What the refit changed on test, for the record; it chooses nothing.
        _, clip_probs, clip_labels = clip_level(predict(model, data.test), data.test.index)
        before_refit["test_clip_accuracy_before_refit"] = accuracy(clip_probs, clip_labels)
        log.info("%s: refitting on train + val for %d epoch(s), the best validation epoch", run.name, best_epoch + 1)
        model = refit_run(run.model, run.fit, data, epochs=best_epoch + 1, seed=run.seed)
    test_probs = predict(model, data.test)
    metrics = summarize(val_probs, data.val.index, test_probs, data.test.index, data.class_names) | before_refit
    metrics |= {"epochs_run": len(history), "best_epoch": best_epoch}
    return TrainedRun(model, history, val_probs, test_probs, metrics)


@dataclass(frozen=True)
class Cnn1dConfig:
    architectures: tuple[str, ...]
    first_kernels: tuple[int, ...]
    epochs: int
    batch_size: int
    learning_rate: float
    seed: int

    def __post_init__(self):
        for name in self.architectures:
            require(name in CNN1D_BLOCKS, "architectures", f"names from {list(CNN1D_BLOCKS)}", name)
        for k in self.first_kernels:
            require(k >= 1, "first_kernels", "kernel sizes >= 1", k)
        require(len(self.architectures) >= 1 and len(self.first_kernels) >= 1, "architectures", "a non-empty grid", self.architectures)
        require(self.epochs >= 1, "epochs", "an integer >= 1", self.epochs)
        require(self.batch_size >= 1, "batch_size", "an integer >= 1", self.batch_size)
        require(0 < self.learning_rate < 1, "learning_rate", "a rate in (0, 1)", self.learning_rate)


def fit_cell(cfg: Cnn1dConfig, architecture: str, kernel: int, data: Data) -> tuple[dict, pd.DataFrame]:
    """Train one grid cell; its scores (best validation-loss epoch) and learning curve."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(cfg.seed)
    tf.config.experimental.enable_op_determinism()
    model = cnn1d(architecture, kernel, data.train.x.shape[1], len(data.class_names))
    model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    best = keras.callbacks.EarlyStopping(monitor="val_loss", patience=cfg.epochs, restore_best_weights=True)  # keep the best epoch
    # Datasets of our own rather than arrays, which Keras would batch in datasets with tf.data's autotuning on.
    training = tf.data.Dataset.from_tensor_slices((data.train.x[..., np.newaxis], data.train.y))
    training = training.shuffle(len(data.train.y), seed=cfg.seed, reshuffle_each_iteration=True).batch(cfg.batch_size)
    validation = tf.data.Dataset.from_tensor_slices((data.val.x[..., np.newaxis], data.val.y)).batch(256)
    history = model.fit(
        _without_autotuning(training.prefetch(2)),
        validation_data=_without_autotuning(validation.prefetch(2)),
        epochs=cfg.epochs,
        callbacks=[best, tracking.epoch_logger()],
        shuffle=False,  # the dataset shuffles, seeded; Keras warns that its own shuffle would be ignored
        verbose=2,
    )
    curve = pd.DataFrame(history.history)
    curve.insert(0, "epoch", np.arange(len(curve)))
    # Batches of our own again: Keras's for arrays map in parallel, which under op determinism TensorFlow rewrites into
    # a MapDataset its C++ side logs an error line about ("NodeDef mentions attribute use_unbounded_threadpool").
    batches = [tf.data.Dataset.from_tensor_slices(x[..., np.newaxis]).batch(256) for x in (data.val.x, data.test.x)]
    val, test = (model.predict(b, verbose=0) for b in batches)
    metrics = summarize(val, data.val.index, test, data.test.index, data.class_names)
    metrics.update(best_epoch=int(curve["val_loss"].idxmin()), parameters=int(model.count_params()))
    return metrics, curve
