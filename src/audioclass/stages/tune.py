"""Stage ``tune``: an Optuna study of the CNN's hyperparameters; pruned, resumable, shareable by workers.

The search space is ``tune.space``: ranges and choices over ``train.model`` and
``train.fit`` keys. A seeded TPE sampler proposes values; each trial fits them
with :func:`audioclass.stages.train.fit_run`, the train stage's own function,
on a stratified ``data_fraction`` of the training clips (every copy of a
chosen clip) for at most ``trial_epochs`` epochs. Its score is the
**validation** accuracy at its best epoch; the test split is never loaded. A
median pruner, fed each epoch's validation accuracy by Optuna's Keras pruning
callback, stops trials that trail the earlier ones at the same epoch.

Writes to ``<out>`` (small files, committed with git)::

    best_params.yaml          train.model / train.fit with the best trial's values: the train stage's params
    tune.json                 metrics: best validation accuracy, its trial, trials complete and pruned
    trials.csv                one row per finished trial: state, value, best so far, params (a DVC plot)
    importance.csv            each tuned key's fANOVA importance (a DVC plot)
    optimization_history.png  Optuna's plots, also attached to the study's MLflow run
    param_importances.png

With ``tune.enabled: false`` no trial runs and ``best_params.yaml`` holds
``train.model`` / ``train.fit`` exactly as written.

**Storage and resuming.** The study lives in ``$AUDIOCLASS_OPTUNA_STORAGE``,
else ``tune.storage``, else ``sqlite:///<project>/optuna.db`` (gitignored,
outside DVC's outputs). Besides SQLAlchemy URLs such as
``postgresql+psycopg://user:password@host/db``, ``journal:<file>`` selects
Optuna's journal storage (a relative file is under the project). The study's
name is ``tune.study`` plus a hash of everything that shapes a trial's score:
the space, the base hyperparameters, the per-trial budget, the seed and the
data. ``tune.trials`` is the study's total, so raising it resumes the same
study and runs only the new trials, while changing any of those inputs starts
a fresh study. (Code is not in the hash: after changing the model code, rename
``tune.study`` to start over.)

**MLflow.** The study is one parent run, kept across resumes; every trial is a
run nested under it, with its params, per-epoch metrics and ``trial_state``
(COMPLETE or PRUNED). The parent holds the best trial, its params and the plots.

**More workers.** ``python -m audioclass.stages.tune --worker`` (or
``audioclass tune --worker``) joins the same study from another process or
machine that sees the same storage, data and params; it runs trials until the
study has ``tune.trials`` (or ``--trials N`` more) and writes nothing. SQLite
suits workers on one machine; use PostgreSQL or a journal file on a shared
disk across machines. Worker samplers are seeded at random, so a study worked
on concurrently is not reproducible trial by trial; a study run by the stage
alone is.
"""

from __future__ import annotations

import logging
from pathlib import Path

from audioclass import tracking
from audioclass.cli import run_stage, stage_parser
from audioclass.config import load_params, stage_config
from audioclass.errors import ConfigError
from audioclass.training import Hyperparameters, TrainConfig
from audioclass.tuning import TuneConfig, check_space, open_storage, optimize, storage_url, study_name, trial_data, tune

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("tune", __doc__)
    parser.add_argument("--data", type=Path, required=True, help="the spectrogram stage's folder")
    parser.add_argument("--out", type=Path, help="the stage's folder, e.g. reports/tune (not with --worker)")
    parser.add_argument("--worker", action="store_true", help="join the study as an extra worker: run trials, write nothing")
    parser.add_argument("--trials", type=int, help="with --worker: run this many trials (default: until the study has tune.trials)")
    args = parser.parse_args(argv)
    if args.worker == (args.out is not None):
        parser.error("give --out (the stage) or --worker (an extra worker), not both or neither")
    if args.trials is not None and (not args.worker or args.trials < 1):
        parser.error("--trials needs --worker and a count >= 1")
    params = load_params(args.params)
    cfg = stage_config(TuneConfig, params, "tune", args.params)
    train = stage_config(TrainConfig, params, "train", args.params)
    base = Hyperparameters(train.model, train.fit)
    check_space(cfg, base, args.params)
    tracking.require_store()
    if args.worker:
        if not cfg.enabled:
            raise ConfigError(f"{args.params}: tune.enabled: expected true for a worker, got false")
        storage = open_storage(*storage_url(cfg))
        optimize(cfg, base, trial_data(cfg, args.data), study_name(cfg, base, args.data), storage, worker=True, worker_trials=args.trials)
        return
    metrics = tune(cfg, base, args.data, args.out)
    if metrics["enabled"]:
        log.info(
            "best: trial %d, validation accuracy %.4f (%d complete, %d pruned)",
            metrics["best_trial"],
            metrics["best_val_accuracy"],
            metrics["trials_complete"],
            metrics["trials_pruned"],
        )


if __name__ == "__main__":
    run_stage(main)
