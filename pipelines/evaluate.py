"""Evaluate stage: test metrics of every final model, every fusion and the selection, computed once and logged.

Besides the ranking metrics (nDCG, precision, recall, MAP, hit, MRR at k) each model gets catalogue coverage,
intra-list diversity (by item category, where items have one) and novelty, and the selected model gets a
paired bootstrap confidence interval of its nDCG@k difference to the best single model on the test users.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from fusionrec.config import RunConfig
from models.base import Recommender
from pipelines.bundle import Bundle
from pipelines.fuse import fusions_dir
from pipelines.metrics import (
    at_k,
    catalogue_coverage,
    intra_list_diversity,
    novelty,
    paired_bootstrap_ci,
    per_user_metrics,
)
from pipelines.splitdata import HeldOut, SplitData, load_split_data
from pipelines.stage import StageInputError, StageResult, load_report
from pipelines.tracking import lineage_tags, mlflow_metrics, setup_mlflow
from pipelines.train import model_dir

log = logging.getLogger(__name__)

SELECTED = "selected"


@dataclass
class EvaluationResult(StageResult):
    protocol: str
    k: int
    selected: str  # which candidate the selection is
    test: dict[str, dict[str, float]]  # model name (and "selected") -> test metrics
    test_users: int
    confidence_interval: dict[str, Any] | None  # selected vs best single model, nDCG@k on test users
    mlflow_run_id: str


def test_metrics(
    model: Recommender, held: HeldOut, data: SplitData, popularity: np.ndarray, k: int
) -> tuple[dict[str, float], np.ndarray]:
    """All test metrics of one model, and its per-user nDCG@k (for the bootstrap); ``popularity`` is the
    number of training users per item (for novelty)."""
    recommended, _ = model.recommend(held.user_idx, k, exclude=held.exclude)
    per_user = per_user_metrics(recommended, held.relevant, held.n_relevant, k)
    metrics = at_k({name: float(values.mean()) for name, values in per_user.items()}, k)
    metrics |= {
        "coverage": catalogue_coverage(recommended, data.train.n_items),
        "novelty": novelty(recommended, popularity, data.train.n_users),
    }
    diversity = intra_list_diversity(recommended, data.item_categories)
    if np.isfinite(diversity):  # nan when no item has a category
        metrics["diversity"] = diversity
    return metrics, per_user["ndcg"]


def evaluate(cfg: RunConfig) -> EvaluationResult:
    """Score each final model, each fusion and the selected bundle on the test split."""
    import mlflow

    selection = load_report(cfg.paths.reports, "select")
    trained = load_report(cfg.paths.reports, "train")
    if not selection or not trained:
        raise StageInputError("nothing to evaluate: run the train and fuse stages first")
    data = load_split_data(cfg, with_features=False)  # fitted models carry the features they need
    models: dict[str, Recommender] = {
        name: Recommender.load(model_dir(cfg, "final", name)) for name in sorted(trained["models"])
    }
    models |= {name: Recommender.load(fusions_dir(cfg) / name) for name in selection.get("fusions", {})}
    models[SELECTED] = Bundle.load(cfg.paths.artifacts / "selected").model
    test: dict[str, dict[str, float]] = {}
    per_user: dict[str, np.ndarray] = {}
    popularity = np.asarray((data.train.matrix > 0).sum(axis=0)).ravel()
    for name, model in models.items():
        test[name], per_user[name] = test_metrics(model, data.test, data, popularity, cfg.k)
        log.info("test %-10s %s", name, "  ".join(f"{k}={v:.4f}" for k, v in test[name].items()))
    metric = f"ndcg@{cfg.k}"
    singles = sorted(trained["models"])
    best_single = max(singles, key=lambda n: test[n][metric])
    interval = None
    if selection["selected"] != best_single:
        interval = {"metric": metric, "versus": best_single} | paired_bootstrap_ci(
            per_user[SELECTED], per_user[best_single], seed=cfg.seed
        )
    setup_mlflow(cfg)
    with mlflow.start_run(
        run_name=f"evaluate-{cfg.source.name}", tags=lineage_tags(cfg) | {"stage": "evaluate"}
    ) as run:
        mlflow.set_tag("selected", selection["selected"])
        mlflow.log_param("test_users", data.test.n_users)
        for name, metrics in test.items():
            mlflow.log_metrics(mlflow_metrics({f"{name}.test_{k}": v for k, v in metrics.items()}))
        if interval:
            mlflow.log_metrics(
                {f"selected_vs_best_single.{k}": interval[k] for k in ("difference", "low", "high")}
            )
    result = EvaluationResult(
        protocol=cfg.effective_protocol,
        k=cfg.k,
        selected=selection["selected"],
        test=test,
        test_users=data.test.n_users,
        confidence_interval=interval,
        mlflow_run_id=run.info.run_id,
    )
    result.save(cfg.paths.reports, "evaluate")
    return result
