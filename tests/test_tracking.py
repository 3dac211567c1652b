"""Where MLflow runs go: the project's store, even from DVC's temporary experiment workspaces."""

from audioclass import tracking


def test_project_root_is_found_from_inside_the_project(tmp_path):
    (tmp_path / ".dvc").mkdir()
    (tmp_path / "src" / "deep").mkdir(parents=True)
    assert tracking.project_root(tmp_path / "src" / "deep") == tmp_path.resolve()


def test_temporary_experiment_workspaces_log_to_the_project(tmp_path):
    workspace = tmp_path / "project" / ".dvc" / "tmp" / "exps" / "tmpabc123"
    (workspace / ".dvc").mkdir(parents=True)  # the temporary copy is a DVC project of its own
    assert tracking.project_root(workspace) == (tmp_path / "project").resolve()


def test_tracking_uri_default_and_override(tmp_path, monkeypatch):
    (tmp_path / ".dvc").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking.tracking_uri() == "http://127.0.0.1:5000"


def test_run_tags_name_the_dvc_stage_and_experiment(monkeypatch):
    monkeypatch.setenv("DVC_STAGE", "train@3")
    monkeypatch.setenv("DVC_EXP_NAME", "lucky-lark")
    tags = tracking.run_tags()
    assert tags["dvc_stage"] == "train@3" and tags["dvc_exp_name"] == "lucky-lark"
    monkeypatch.delenv("DVC_EXP_NAME")
    assert "dvc_exp_name" not in tracking.run_tags()


def test_flatten_nested_params():
    assert tracking.flatten({"seed": 1, "model": {"width": 16, "opt": {"lr": 0.1}}}) == {"seed": 1, "model.width": 16, "model.opt.lr": 0.1}


def test_run_tags_without_git(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    assert "mlflow.source.git.commit" not in tracking.run_tags()


def test_epoch_logger_never_starts_a_run_of_its_own(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    tracking.epoch_logger().on_epoch_end(0, {"loss": 1.0})
    assert mlflow.active_run() is None
