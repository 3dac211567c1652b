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

import contextlib
import importlib.abc
import importlib.util
import os
import sys
import tempfile

# Here, because every entry point imports the package before TensorFlow loads.
# Keep TensorFlow's C++ start-up chatter out of the stages' logs.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# oneDNN's CPU kernels, which TensorFlow turns on by itself only on some CPUs: on a 2-core
# AMD EPYC, where it did not, they cut params.yaml's model from 19.7 to 10.2 s an epoch
# (benchmarks/reports/kernels.md).
# Runs stay repeatable per seed; TF_ENABLE_ONEDNN_OPTS=0 goes back to Eigen's kernels.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

__version__ = "0.1.0"


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Imports ``tensorflow`` with the INFO lines its native code writes at start-up left out of stderr.

    Since TensorFlow 2.19 they go through absl's logging before it is set up, so ``TF_CPP_MIN_LOG_LEVEL``
    no longer hides them: every command that loads a model printed "oneDNN custom operations are on", twice.
    Anything else written to stderr meanwhile (warnings, errors) is passed on, in order.
    """

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once, and so that the real finders answer
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            exec_module = spec.loader.exec_module

            def quiet_exec_module(module):
                with native_lines_left_out_of_stderr(b"I0000 ", b"WARNING: All log messages before absl::InitializeLog() is called"):
                    exec_module(module)

            spec.loader.exec_module = quiet_exec_module
        return spec


@contextlib.contextmanager
def native_lines_left_out_of_stderr(*prefixes: bytes):
    """While it runs, lines that native code writes to stderr starting with one of ``prefixes`` are dropped.

    Everything else written to stderr meanwhile is passed on, in order, when it ends.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            passed_on = b"".join(line for line in captured.read().splitlines(keepends=True) if not line.startswith(prefixes))
            while passed_on:
                passed_on = passed_on[os.write(2, passed_on) :]


if "tensorflow" not in sys.modules:
    sys.meta_path.insert(0, _QuietTensorFlowImport())
