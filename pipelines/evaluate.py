"""Evaluate stage: test metrics of every final model and of the selection, computed once and logged."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from fusionrec.config import RunConfig
from models.base import Recommender
from pipelines.bundle import Bundle
from pipelines.splitdata import evaluate_recommender, load_split_data
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
    mlflow_run_id: str


def evaluate(cfg: RunConfig) -> EvaluationResult:
    """Score each final model and the selected bundle on the test split."""
    import mlflow

    selection = load_report(cfg.paths.reports, "select")
    trained = load_report(cfg.paths.reports, "train")
    if not selection or not trained:
        raise StageInputError("nothing to evaluate: run the train and fuse stages first")
    data = load_split_data(cfg, with_features=False)  # fitted models score without side features
    test: dict[str, dict[str, float]] = {}
    for name in sorted(trained["models"]):
        test[name] = evaluate_recommender(Recommender.load(model_dir(cfg, "final", name)), data.test, cfg.k)
    bundle = Bundle.load(cfg.paths.artifacts / "selected")
    test[SELECTED] = evaluate_recommender(bundle.model, data.test, cfg.k)
    setup_mlflow(cfg)
    with mlflow.start_run(
        run_name=f"evaluate-{cfg.source.name}", tags=lineage_tags(cfg) | {"stage": "evaluate"}
    ) as run:
        mlflow.set_tag("selected", selection["selected"])
        mlflow.log_param("test_users", data.test.n_users)
        for name, metrics in test.items():
            mlflow.log_metrics(mlflow_metrics({f"{name}.test_{k}": v for k, v in metrics.items()}))
    for name, metrics in test.items():
        log.info("test %-10s %s", name, "  ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    result = EvaluationResult(
        protocol=cfg.effective_protocol,
        k=cfg.k,
        selected=selection["selected"],
        test=test,
        test_users=data.test.n_users,
        mlflow_run_id=run.info.run_id,
    )
    result.save(cfg.paths.reports, "evaluate")
    return result
