"""SparkALS: clusters, exported factors, cold rows, persistence without Spark, registry and tuning, and
ML-100k quality beside the in-process iALS. One local SparkSession for the whole module (its start-up is
the expensive part), stopped at the end."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import scipy.sparse as sp

from models.base import InteractionData, Recommender
from models.ials import IALS
from models.registry import create_model, get_model_class
from models.spark_als import SparkALS, ensure_checkpoint_dir, spark_session
from tests.models.conftest import Evaluate, Split

# Two factors for the two clusters of the tiny data, as for ials (Spark's penalty is per interaction).
TINY = {"factors": 2, "regularization": 0.05, "alpha": 5.0, "iterations": 10, "seed": 1}


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    """The module's session, started through the model's own path with the master from the environment."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FUSIONREC_SPARK_MASTER", "local[2]")
        session = spark_session()
    yield session
    session.stop()


@pytest.fixture(scope="module")
def fitted(spark: Any, tiny: InteractionData) -> SparkALS:
    return SparkALS(**TINY).fit(tiny)


@pytest.mark.slow  # a Spark job
def test_session_master_comes_from_the_environment_and_is_reused(spark: Any) -> None:
    assert spark.sparkContext.master == "local[2]"
    assert spark_session() is spark  # fit uses the active session instead of starting another


@pytest.mark.slow  # a Spark job
def test_scores_are_factor_dot_products(fitted: SparkALS) -> None:
    scores = fitted.score(np.array([0, 5, 11]))
    assert scores.shape == (3, 8) and scores.dtype == np.float32
    assert fitted.user_factors_.shape == (12, 2) and fitted.item_factors_.shape == (8, 2)
    np.testing.assert_allclose(scores, fitted.user_factors_[[0, 5, 11]] @ fitted.item_factors_.T)


@pytest.mark.slow  # a Spark job
def test_learns_clusters_and_recommend_excludes_seen(fitted: SparkALS, tiny: InteractionData) -> None:
    items, _ = fitted.recommend(np.arange(12), k=2, exclude=tiny.matrix)
    for user, row in enumerate(items):
        assert not set(row) & set(tiny.matrix[user].indices)
        cluster = range(0, 4) if user < 6 else range(4, 8)
        assert row[0] in cluster, f"user {user} got {row}"


@pytest.mark.slow  # a Spark job
def test_a_long_fit_checkpoints_cold_rows_score_zero_and_the_last_sweep_is_reported(
    spark: Any, tiny: InteractionData
) -> None:
    matrix = sp.vstack([tiny.matrix, sp.csr_matrix((1, 8))]).tolil()
    matrix[:, 3] = 0
    data = InteractionData(matrix.tocsr(), np.arange(13), tiny.item_ids)
    # 30 sweeps (the top of the search space) without a checkpoint folder: StackOverflowError, dead context
    model = SparkALS(**{**TINY, "iterations": 30})
    seen: list[int] = []
    model.epoch_callback = seen.append
    scores = model.fit(data).score(np.arange(13))
    assert spark.sparkContext.getCheckpointDir()
    assert not scores[12].any() and not scores[:, 3].any() and np.isfinite(scores).all()
    assert seen == [29]  # Spark runs all sweeps in one job: only the last is visible


@pytest.mark.slow  # a Spark job
def test_save_load_round_trip_without_spark(fitted: SparkALS, tmp_path: Path) -> None:
    fitted.save(tmp_path / "als")
    loaded = Recommender.load(tmp_path / "als")
    assert isinstance(loaded, SparkALS) and loaded.params == fitted.params
    np.testing.assert_array_equal(loaded.score(np.arange(12)), fitted.score(np.arange(12)))
    code = (
        "import sys; from models.base import Recommender; import numpy as np; "
        f"m = Recommender.load({str(tmp_path / 'als')!r}); m.recommend(np.arange(3), 2); "
        "print('pyspark' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_registered_by_name_with_a_search_space() -> None:
    assert get_model_class("spark_als") is SparkALS
    assert create_model("spark_als", factors=8).factors == 8
    trial = optuna.trial.FixedTrial({"factors": 32, "regularization": 0.1, "alpha": 2.0, "iterations": 5})
    model = SparkALS(**SparkALS.search_space(trial))
    assert (model.factors, model.regularization, model.alpha, model.iterations) == (32, 0.1, 2.0, 5)
    with pytest.raises(ValueError, match="regularization"):
        SparkALS(regularization=-1)


@pytest.mark.slow  # a Spark job
def test_ml100k_quality_in_the_range_of_ials(spark: Any, ml100k: Split, ml100k_ndcg: Evaluate) -> None:
    start = time.perf_counter()
    spark_model = SparkALS().fit(ml100k.train)
    spark_seconds = time.perf_counter() - start
    start = time.perf_counter()
    ials = IALS().fit(ml100k.train)
    ials_seconds = time.perf_counter() - start
    spark_ndcg, ials_ndcg = ml100k_ndcg(spark_model), ml100k_ndcg(ials)
    print(
        f"ML-100k nDCG@10: spark_als {spark_ndcg:.4f} (fit {spark_seconds:.1f}s), "
        f"ials {ials_ndcg:.4f} (fit {ials_seconds:.1f}s)"
    )
    assert spark_ndcg > 0.45 and abs(spark_ndcg - ials_ndcg) < 0.03


class FakeContext:
    def __init__(self, master: str, folder: str | None = None) -> None:
        self.master, self.folder = master, folder

    def getCheckpointDir(self) -> str | None:  # SparkContext's method names
        return self.folder

    def setCheckpointDir(self, folder: str) -> None:
        self.folder = folder


def test_checkpoint_folder_from_env_else_temporary_on_local_else_required(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FUSIONREC_SPARK_CHECKPOINT_DIR", raising=False)
    kept = FakeContext("local[*]", "/already/set")
    ensure_checkpoint_dir(kept)
    assert kept.folder == "/already/set"
    local = FakeContext("local[2]")
    ensure_checkpoint_dir(local)
    assert local.folder and Path(local.folder).is_dir()
    with pytest.raises(RuntimeError, match="FUSIONREC_SPARK_CHECKPOINT_DIR"):
        ensure_checkpoint_dir(FakeContext("k8s://https://kubernetes.default.svc"))
    monkeypatch.setenv("FUSIONREC_SPARK_CHECKPOINT_DIR", "s3a://bucket/checkpoints")
    cluster = FakeContext("spark://spark-master:7077")
    ensure_checkpoint_dir(cluster)
    assert cluster.folder == "s3a://bucket/checkpoints"
