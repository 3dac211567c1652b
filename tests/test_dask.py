"""The data stages on a real Dask cluster: the same joblib call through joblib's Dask backend, the same bytes."""

from __future__ import annotations

from pathlib import Path

import pytest

from audioclass.augmentation import AugmentConfig, augment
from audioclass.clips import ExtractConfig, extract
from audioclass.errors import ConfigError
from audioclass.features import FeatureConfig, features
from audioclass.parallel import DASK_ENV, dask_client, parallel_map
from audioclass.raw_vectors import RawVectorConfig, raw_vectors
from audioclass.spectrograms import SpectrogramConfig, spectrograms
from audioclass.splits import SplitConfig, split
from conftest import config, tiny_clips, write_esc10_release


@pytest.fixture(scope="module")
def cluster():
    """A ``dask.distributed`` LocalCluster on loopback: a scheduler and two worker processes, one thread each."""
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None) as local:
        yield local.scheduler_address


def data_stages(source: Path, root: Path, jobs: int) -> None:
    """extract, augment, spectrograms, raw_vectors and features, as their stages call them."""
    meta = extract(config(ExtractConfig, "extract", source=str(source), sample_rate=8000, duration=0.5), root / "prepared", jobs=jobs)
    augment(meta, root / "prepared", config(AugmentConfig, "augment", copies=2), root / "augmented", jobs=jobs)
    split(meta, config(SplitConfig, "split", val_fraction=0.25)).to_csv(root / "split.csv", index=False)
    spec = config(SpectrogramConfig, "spectrograms", n_fft=256, hop_length=64, n_mels=32)
    spectrograms(root / "augmented", root / "split.csv", spec, root / "spectrograms", root / "grid.png", jobs=jobs, silence_dbfs=-90.0)
    raw = config(RawVectorConfig, "raw_vectors", seconds=0.4, rate=100.0)
    raw_vectors(root / "augmented", root / "split.csv", raw, root / "raw_vectors", jobs=jobs)
    features(root / "augmented", root / "split.csv", config(FeatureConfig, "features"), root / "features", jobs=jobs)


def contents(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_data_stages_on_a_dask_cluster_write_the_bytes_of_a_serial_run(cluster, tmp_path, monkeypatch):
    source = write_esc10_release(tmp_path / "ESC-10", tiny_clips(per_class=5))
    data_stages(source, tmp_path / "serial", jobs=1)
    monkeypatch.setenv(DASK_ENV, cluster)
    data_stages(source, tmp_path / "dask", jobs=2)
    local, on_dask = contents(tmp_path / "serial"), contents(tmp_path / "dask")
    assert sorted(on_dask) == sorted(local) and len(local) > 60
    assert [name for name in local if on_dask[name] != local[name]] == []


def test_tasks_run_in_the_cluster_s_workers_and_come_back_in_order(cluster, monkeypatch):
    import os

    monkeypatch.setenv(DASK_ENV, cluster)
    pids = parallel_map(_pid_after, list(range(40)), jobs=1, desc="pids")
    assert [n for n, _ in pids] == list(range(40))  # input order
    workers = {pid for _, pid in pids}
    assert os.getpid() not in workers and len(workers) == 2  # jobs=1 is this machine's count; the cluster has two workers


def _pid_after(n: int) -> tuple[int, int]:
    import os
    import time

    time.sleep(0.02 * (n % 3))  # out-of-order finishing
    return n, os.getpid()


def test_an_unreachable_scheduler_is_one_line_naming_the_variable(monkeypatch):
    monkeypatch.setenv(DASK_ENV, "tcp://127.0.0.1:9")
    dask_client.cache_clear()
    with pytest.raises(ConfigError, match=rf"^\${DASK_ENV}=tcp://127\.0\.0\.1:9: no Dask scheduler answers .*; expected a running"):
        parallel_map(abs, [1, -2, 3], jobs=2, desc="x")
