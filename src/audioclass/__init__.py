"""audioclass: a cached, reproducible pipeline for audio classification.

The pipeline's stages live in :mod:`audioclass.stages`, one module each, in the
order DVC runs them: extract → split → augment → spectrograms.
"""

__version__ = "0.1.0"
