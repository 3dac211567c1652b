"""Architectures, by name: ``ARCHITECTURES[name](input_shape, n_classes, cfg) -> keras.Model``.

Inputs are spectrogram batches ``(batch, n_bands, n_frames, n_channels)``;
outputs are class probabilities ``(batch, n_classes)``.

``compact_cnn`` (default)
    Built for CPUs: ``depth`` blocks of conv → batch norm → ReLU → 2×2 max
    pool, doubling ``width`` each block, then global average and max pooling,
    dropout and a softmax. The first conv is ``first_kernel`` square and
    strides 2 in time; the others are 3×3. About 0.1 M parameters at width 16,
    depth 4.
``book_cnn``
    The reference study's 2D CNN: Conv 32 (k×k) → Conv 64 3×3 → MaxPool 2 →
    Dropout 0.25 → Conv 64 3×3 → MaxPool 2 → Dropout 0.25 → Dense 128 →
    Dropout 0.5 → softmax, with k = ``first_kernel``.
``crnn``
    ``compact_cnn``'s blocks as a front end, pooling frequency in every block
    but time only in the first two (27 steps of 185 ms from 216 frames), the
    remaining bands averaged, then a bidirectional GRU of ``units`` a way over
    time and attention pooling: a learned score per step, softmaxed over time.
``transformer``
    Tokens of ``first_kernel`` frames × every band (72 of 70 ms from 216
    frames at 3), projected to ``units`` values, plus a fixed sinusoidal
    position code; ``depth`` pre-norm encoder blocks of ``heads``-head
    self-attention and a 2×``units`` GELU feed-forward, then the tokens'
    mean and a softmax.

Every model is plain Keras layers (the position code is a constant), so a
saved model loads with Keras's ``safe_mode`` and no code of ours.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:  # Keras loads when a model is built, so configs that name an architecture stay light
    import keras


class ModelConfig(Protocol):
    width: int
    depth: int
    dropout: float
    first_kernel: int
    units: int
    heads: int


# Keras's default momentum (0.99) lets the running statistics lag far behind the
# weights over a few hundred steps, and inference-mode predictions collapse;
# 0.9 tracks them (PyTorch's default).
BN_MOMENTUM = 0.9


def band_norm(x):
    """A learned scale and shift per band and channel: the front end's [0, 1] dB range is not
    zero-mean, and its delta channels are on a scale of their own."""
    from keras import layers

    bands, frames, channels = x.shape[1:]
    if channels == 1:
        return layers.BatchNormalization(axis=1, momentum=BN_MOMENTUM)(x)
    # Keras normalises along one axis: fold the channels into the bands for it, then unfold them.
    x = layers.Reshape((bands * channels, frames))(layers.Permute((1, 3, 2))(x))
    x = layers.BatchNormalization(axis=1, momentum=BN_MOMENTUM)(x)
    return layers.Permute((1, 3, 2))(layers.Reshape((bands, channels, frames))(x))


def conv_blocks(x, cfg: ModelConfig, time_pooled_blocks: int):
    """``cfg.depth`` blocks of conv → batch norm → ReLU → max pool, doubling ``cfg.width`` each block;
    every block halves the bands, the first ``time_pooled_blocks`` halve the frames too."""
    from keras import layers

    for block in range(cfg.depth):
        # The first convolution strides 2 in time: 5 s at 23 ms hops is finer than
        # the classes need, and it halves the most expensive block (13 s vs 20 s an epoch).
        strides = (1, 2) if block == 0 else 1
        kernel = cfg.first_kernel if block == 0 else 3
        x = layers.Conv2D(cfg.width * 2**block, kernel, strides=strides, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
        x = layers.ReLU()(x)
        x = layers.MaxPooling2D((2, 2 if block < time_pooled_blocks else 1), padding="same")(x)
    return x


def compact_cnn(input_shape: tuple[int, ...], n_classes: int, cfg: ModelConfig) -> keras.Model:
    import keras
    from keras import layers

    inputs = keras.Input(input_shape)
    x = conv_blocks(band_norm(inputs), cfg, time_pooled_blocks=cfg.depth)
    # Average pooling hears stationary sounds (rain); max pooling hears events (a sneeze).
    x = layers.Concatenate()([layers.GlobalAveragePooling2D()(x), layers.GlobalMaxPooling2D()(x)])
    x = layers.Dropout(cfg.dropout)(x)
    outputs = layers.Dense(n_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="compact_cnn")


def book_cnn(input_shape: tuple[int, ...], n_classes: int, cfg: ModelConfig) -> keras.Model:
    import keras
    from keras import layers

    k = cfg.first_kernel
    return keras.Sequential(
        [
            keras.Input(input_shape),
            layers.Conv2D(32, k, activation="relu"),
            layers.Conv2D(64, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Dropout(0.25),
            layers.Conv2D(64, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Dropout(0.25),
            layers.Flatten(),
            layers.Dense(128, activation="relu"),
            layers.Dropout(0.5),
            layers.Dense(n_classes, activation="softmax"),
        ],
        name="book_cnn",
    )


def crnn(input_shape: tuple[int, ...], n_classes: int, cfg: ModelConfig) -> keras.Model:
    import keras
    from keras import layers

    inputs = keras.Input(input_shape)
    # Two time poolings leave a step per 185 ms: fine enough for the GRU to hear onsets and rhythm.
    x = conv_blocks(band_norm(inputs), cfg, time_pooled_blocks=2)
    bands, steps, channels = x.shape[1:]
    x = layers.AveragePooling2D((bands, 1))(x)  # what is left of frequency, averaged: (1, steps, channels)
    x = layers.Reshape((steps, channels))(x)
    x = layers.Bidirectional(layers.GRU(cfg.units, return_sequences=True))(x)
    # Attention pooling: a sneeze is a few steps of 27, and a learned weight per step finds them.
    weights = layers.Softmax(axis=1)(layers.Dense(1)(x))
    x = layers.Flatten()(layers.Dot(axes=1)([weights, x]))
    x = layers.Dropout(cfg.dropout)(x)
    outputs = layers.Dense(n_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="crnn")


def position_code(steps: int, width: int) -> np.ndarray:
    """The sinusoidal position code of "Attention Is All You Need", (steps, width) float32."""
    position = np.arange(steps)[:, None]
    rate = 1 / 10000 ** (2 * (np.arange(width) // 2) / width)
    angle = position * rate[None, :]
    return np.where(np.arange(width) % 2 == 0, np.sin(angle), np.cos(angle)).astype(np.float32)


def transformer(input_shape: tuple[int, ...], n_classes: int, cfg: ModelConfig) -> keras.Model:
    import keras
    from keras import layers, ops

    bands = input_shape[0]
    inputs = keras.Input(input_shape)
    # One token per first_kernel frames, of every band and channel: a patch spanning the spectrum.
    x = layers.Conv2D(cfg.units, (bands, cfg.first_kernel), strides=(bands, cfg.first_kernel))(band_norm(inputs))
    steps = x.shape[2]
    x = layers.Reshape((steps, cfg.units))(x)
    # A constant, not a layer of ours: the saved model stays plain Keras.
    x = ops.add(x, position_code(steps, cfg.units))
    for _ in range(cfg.depth):
        h = layers.LayerNormalization(epsilon=1e-6)(x)
        # Each head attends in units // heads values; the output projection returns to units whatever the remainder.
        h = layers.MultiHeadAttention(cfg.heads, cfg.units // cfg.heads, dropout=cfg.dropout)(h, h)
        x = layers.Add()([x, layers.Dropout(cfg.dropout)(h)])
        h = layers.LayerNormalization(epsilon=1e-6)(x)
        h = layers.Dense(2 * cfg.units, activation="gelu")(h)
        x = layers.Add()([x, layers.Dropout(cfg.dropout)(layers.Dense(cfg.units)(h))])
    x = layers.GlobalAveragePooling1D()(layers.LayerNormalization(epsilon=1e-6)(x))
    outputs = layers.Dense(n_classes, activation="softmax")(layers.Dropout(cfg.dropout)(x))
    return keras.Model(inputs, outputs, name="transformer")


ARCHITECTURES: dict[str, Callable[[tuple[int, ...], int, ModelConfig], keras.Model]] = {
    "compact_cnn": compact_cnn,
    "book_cnn": book_cnn,
    "crnn": crnn,
    "transformer": transformer,
}


# The study's 1D CNNs on raw-sample vectors, a baseline family.
# Extra [conv → conv → pool] blocks after the medium trunk; None: the shallow trunk alone.
CNN1D_BLOCKS = {"shallow": None, "medium": 0, "deep0": 1, "deep1": 2, "deep2": 3}


def cnn1d(architecture: str, first_kernel: int, length: int, n_classes: int) -> Any:
    """One member of the study's 1D family (``architecture`` in :data:`CNN1D_BLOCKS`) for raw vectors of ``length`` samples."""
    import keras
    from keras import layers

    def pool(x: Any) -> Any:
        return layers.Dropout(0.25)(layers.MaxPooling1D(3, padding="same")(x))

    def conv(x: Any, filters: int = 64, kernel: int = 3) -> Any:
        return layers.Conv1D(filters, kernel, padding="same", activation="relu")(x)

    inputs = keras.Input((length, 1))
    x = conv(inputs, 32, first_kernel)
    extra = CNN1D_BLOCKS[architecture]
    if extra is not None:
        x = conv(conv(x))
    x = pool(x)
    for _ in range(extra or 0):
        x = pool(conv(conv(x)))
    x = layers.Dropout(0.5)(layers.Dense(512, activation="relu")(layers.Flatten()(x)))
    outputs = layers.Dense(n_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name=f"cnn1d_{architecture}_k{first_kernel}")
