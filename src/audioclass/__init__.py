"""audioclass: a cached, reproducible pipeline for audio classification.

The pipeline's stages live in :mod:`audioclass.stages`, one module each, in the
order DVC runs them: extract → split → augment → spectrograms.
"""

import os

# Here, because every entry point imports the package before TensorFlow loads.
# Keep TensorFlow's C++ start-up chatter out of the stages' logs.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# oneDNN's CPU kernels, which TensorFlow turns on by itself only on some CPUs: on a 2-core
# AMD EPYC, where it did not, they cut params.yaml's model from 19.7 to 10.2 s an epoch
# (benchmarks/reports/kernels.md).
# Runs stay repeatable per seed; TF_ENABLE_ONEDNN_OPTS=0 goes back to Eigen's kernels.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

__version__ = "0.1.0"
