"""Implicit ALS on Apache Spark (``pyspark.ml.recommendation.ALS`` with ``implicitPrefs``).

The same model family as ``ials`` (Hu, Koren & Volinsky 2008: confidence ``1 + alpha * r`` on observed
cells, preference 0 with confidence 1 elsewhere), fitted by Spark's block ALS, which partitions users and
items into blocks and runs on every executor of a cluster. Two differences from ``implicit``: Spark scales
the L2 penalty of each user (item) by its number of interactions (ALS-WR), so ``regularization`` is about
100x smaller than ials's; and it solves each block exactly (Cholesky) instead of by conjugate gradient.

Spark is used inside ``fit`` only. The factors are collected to numpy, so scoring, saving and loading need
neither Spark nor Java. ``fit`` uses the active SparkSession, else starts one on the master named by
``FUSIONREC_SPARK_MASTER`` (default ``local[*]``; driver memory ``FUSIONREC_SPARK_DRIVER_MEMORY``, default
2g, as the Spark offline store's session); stopping it is the caller's business.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from typing import Any

import numpy as np
import pandas as pd

from models.base import InteractionData
from models.factors import FactorModel

DEFAULT_MASTER = "local[*]"


class SparkALS(FactorModel):
    """Weighted matrix factorisation of the implicit-feedback matrix by Spark; ``score`` is
    ``users @ items.T``.

    ``factors``: rank; ``regularization``: Spark's ``regParam`` (per interaction, see the module doc);
    ``alpha``: confidence of an observed cell; ``iterations``: ALS sweeps; ``blocks``: user and item blocks,
    Spark's unit of parallelism (0: the cluster's default parallelism, i.e. its cores; Spark's own default of
    10 only adds overhead on a small machine). Defaults from a small grid on ML-100k (nDCG@10 at alpha 3:
    regularization 0.15 / 0.3 / 1.0 give 0.460 / 0.484 / 0.399; at alpha 10, 0.3 / 0.6 give 0.442 / 0.471).
    Users and items without interactions get zero factors, so they score 0.
    """

    name = "spark_als"

    def __init__(
        self,
        factors: int = 64,
        regularization: float = 0.3,
        alpha: float = 3.0,
        iterations: int = 15,
        blocks: int = 0,
        seed: int = 0,
    ) -> None:
        if alpha < 0 or regularization < 0:
            raise ValueError("SparkALS: alpha and regularization must be >= 0")
        super().__init__(
            factors=factors,
            regularization=regularization,
            alpha=alpha,
            iterations=iterations,
            blocks=blocks,
            seed=seed,
        )
        self.factors = int(factors)
        self.regularization = float(regularization)
        self.alpha = float(alpha)
        self.iterations = int(iterations)
        self.blocks = int(blocks)
        self.seed = int(seed)
        self.user_factors_: np.ndarray | None = None  # (n_users, factors) float32
        self.item_factors_: np.ndarray | None = None  # (n_items, factors) float32

    def fit(self, data: InteractionData) -> SparkALS:
        from pyspark.ml.recommendation import ALS

        spark = spark_session()
        ensure_checkpoint_dir(spark.sparkContext)
        coo = data.matrix.tocoo()
        positive = coo.data > 0
        ratings = spark.createDataFrame(
            pd.DataFrame(
                {
                    "user": coo.row[positive].astype(np.int32),
                    "item": coo.col[positive].astype(np.int32),
                    "rating": coo.data[positive].astype(np.float32),
                }
            )
        )
        als = ALS(
            rank=self.factors,
            maxIter=self.iterations,
            regParam=self.regularization,
            alpha=self.alpha,
            implicitPrefs=True,
            userCol="user",
            itemCol="item",
            ratingCol="rating",
            seed=self.seed,
        )
        als.setNumBlocks(self.blocks or spark.sparkContext.defaultParallelism)
        model = als.fit(ratings)
        self.user_factors_ = collect_factors(model.userFactors, data.n_users, self.factors)
        self.item_factors_ = collect_factors(model.itemFactors, data.n_items, self.factors)
        # Spark runs every sweep inside one fit: the only epoch a trainer can see is the last
        self.report_epoch(self.iterations - 1)
        return self

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {
            "factors": trial.suggest_categorical("factors", [32, 64, 128, 256]),
            "regularization": trial.suggest_float("regularization", 1e-3, 10.0, log=True),
            "alpha": trial.suggest_float("alpha", 0.5, 50.0, log=True),
            "iterations": trial.suggest_int("iterations", 5, 30),
        }


def spark_settings() -> dict[str, str]:
    """The Spark settings every FusionRec session shares (Spark ALS's and the Feast Spark offline store's):
    master ``FUSIONREC_SPARK_MASTER`` (default ``local[*]``), driver memory ``FUSIONREC_SPARK_DRIVER_MEMORY``
    (default 2g), no web UI."""
    return {
        "spark.master": os.environ.get("FUSIONREC_SPARK_MASTER", DEFAULT_MASTER),
        "spark.ui.enabled": "false",
        "spark.driver.memory": os.environ.get("FUSIONREC_SPARK_DRIVER_MEMORY", "2g"),
    }


def spark_session() -> Any:
    """The active SparkSession, else a new one on ``FUSIONREC_SPARK_MASTER`` (default ``local[*]``)."""
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    settings = spark_settings() | {
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.execution.arrow.pyspark.enabled": "true",  # pandas -> Spark without pickling rows
    }
    if settings["spark.master"].startswith("local"):  # in-process executors: nothing reaches in from off-host
        settings |= {"spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1"}
    builder = SparkSession.builder.appName("fusionrec-spark-als").config(map=settings)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")  # not WARN: every fit warns that its ratings task is "large"
    return session


def ensure_checkpoint_dir(context: Any) -> None:
    """Give Spark a checkpoint folder if it has none. ALS cuts its RDD lineage every ``checkpointInterval``
    (10) sweeps only when one is set; without it a fit of 30 sweeps dies of StackOverflowError and takes the
    SparkContext down with it (seen here even on a 12 x 8 matrix). The folder is
    ``FUSIONREC_SPARK_CHECKPOINT_DIR``, else, on a local master, a temporary folder removed at exit; a
    cluster needs a folder every executor reaches (HDFS, S3, a shared volume), so there it is required."""
    if context.getCheckpointDir():
        return
    folder = os.environ.get("FUSIONREC_SPARK_CHECKPOINT_DIR")
    if folder is None:
        if not context.master.startswith("local"):
            raise RuntimeError(
                "SparkALS on a cluster needs FUSIONREC_SPARK_CHECKPOINT_DIR, a folder every executor can reach"
            )
        folder = tempfile.mkdtemp(prefix="fusionrec-spark-checkpoints-")
        atexit.register(shutil.rmtree, folder, True)
    context.setCheckpointDir(folder)


def collect_factors(factors: Any, n: int, rank: int) -> np.ndarray:
    """Spark's (id, features) factor DataFrame as a dense (n, rank) float32 matrix; absent ids stay zero."""
    rows = factors.toPandas()
    matrix = np.zeros((n, rank), dtype=np.float32)
    if len(rows):
        matrix[rows["id"].to_numpy()] = np.stack(rows["features"].to_numpy()).astype(np.float32)
    return matrix
