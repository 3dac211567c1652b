"""The CSV and JSON files stages hand each other, read and written so that labels stay as the user wrote them.

pandas' defaults would turn a class named ``01`` into the number 1 and a class
named ``None``, ``NA`` or ``nan`` into a missing value. Every table the pipeline
reads goes through :func:`read_table`, which keeps ids and names as text and
counts as integers, and every JSON file through :func:`json_text`, which never
writes ``NaN``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, BinaryIO

import pandas as pd

# Ids, names and paths: text, whatever they look like.
TEXT_COLUMNS = ("clip_id", "source_id", "take", "class_name", "path", "original_path", "split", "actual", "predicted")
# Indices and counts.
INTEGER_COLUMNS = ("label", "fold", "copy")


def read_table(file: str | Path | BinaryIO, text: tuple[str, ...] = ()) -> pd.DataFrame:
    """A CSV written by a stage (or a dataset's metadata), ids and class names kept exactly.

    ``text`` names further columns to keep as text (e.g. ESC-50's ``category``).
    No cell is read as missing: an empty cell is the empty string.
    """
    dtype: dict[str, Any] = {c: str for c in (*TEXT_COLUMNS, *text)} | {c: "int64" for c in INTEGER_COLUMNS}
    return pd.read_csv(file, dtype=dtype, keep_default_na=False, na_values=[])


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def json_text(value: Any, *, indent: int | None = 2) -> str:
    """``value`` as valid JSON text (a non-finite number becomes null), ending in a newline when indented."""
    text = json.dumps(_finite(value), indent=indent, allow_nan=False)
    return text + "\n" if indent is not None else text
