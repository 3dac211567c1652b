"""audioclass: a cached, reproducible pipeline for audio classification.

Three layers, each importing only the ones below it (``lint-imports`` checks it
against ``pyproject.toml``'s contracts):

- :mod:`audioclass.stages`: one thin command per DVC stage (arguments, config,
  inputs, a library call, atomic outputs, MLflow logging). Stages never import
  each other.
- :mod:`audioclass.bundle` and :mod:`audioclass.predict`: the ensemble as a
  registered MLflow model, and classifying new audio with it.
- the library, one module per concept: :mod:`~audioclass.clips`,
  :mod:`~audioclass.splits`, :mod:`~audioclass.augmentation`, the front ends
  (:mod:`~audioclass.spectrograms`, :mod:`~audioclass.features`,
  :mod:`~audioclass.raw_vectors`, :mod:`~audioclass.embeddings`),
  :mod:`~audioclass.models`, :mod:`~audioclass.training`,
  :mod:`~audioclass.tuning`, :mod:`~audioclass.heads`,
  :mod:`~audioclass.estimators`, :mod:`~audioclass.feature_models`,
  :mod:`~audioclass.ensembling` (with :mod:`~audioclass.swarm`) and
  :mod:`~audioclass.reporting`; below them :mod:`~audioclass.tracking`
  (MLflow only) and the foundation (config, errors, outputs, parallel, audio,
  layouts, download, tables).
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
