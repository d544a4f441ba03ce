"""Train stage: each configured model is tuned with Optuna on the validation split (every trial a nested MLflow
run), then the best parameters are fitted twice: on ``fit`` (for fusion tuning) and on ``train`` (final)."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fusionrec.config import RunConfig
from models.base import Recommender
from models.registry import available_models, create_model, get_model_class
from pipelines.splitdata import SplitData, evaluate_recommender, load_split_data
from pipelines.stage import StageInputError, StageResult
from pipelines.tracking import lineage_tags, mlflow_metrics, setup_mlflow

log = logging.getLogger(__name__)


@dataclass
class TrainResult(StageResult):
    models: dict[str, dict[str, Any]]  # name -> best_params, valid metrics, fit_seconds, trials
    mlflow_run_id: str
    artifacts: str


def model_dir(cfg: RunConfig, phase: str, name: str) -> Path:
    """Where a trained model lives: phase "fit" (tuning data) or "final" (all training data)."""
    return cfg.paths.artifacts / phase / name


def _fit_timed(name: str, params: dict[str, Any], data: Any) -> tuple[Recommender, float]:
    start = time.perf_counter()
    model = create_model(name, **params).fit(data)
    return model, time.perf_counter() - start


def tune_model(name: str, data: SplitData, cfg: RunConfig) -> dict[str, Any]:
    """Optuna study for one model; keeps the best fit-phase model on disk and returns its report."""
    import mlflow
    import optuna

    model_class = get_model_class(name)
    metric = f"ndcg@{cfg.k}"
    tags = lineage_tags(cfg) | {"model": name, "stage": "trial"}
    best: dict[str, Any] = {"value": float("-inf")}

    def objective(trial: optuna.Trial) -> float:
        params = model_class.search_space(trial)
        trial.set_user_attr("params", params)
        with mlflow.start_run(run_name=f"{name}-trial-{trial.number}", nested=True):
            mlflow.set_tags(tags | {"trial": str(trial.number)})
            mlflow.log_params(params)
            model, seconds = _fit_timed(name, params, data.fit)
            metrics = evaluate_recommender(model, data.valid, cfg.k)
            mlflow.log_metrics(
                mlflow_metrics({f"valid_{k}": v for k, v in metrics.items()} | {"fit_seconds": seconds})
            )
        log.info(
            "%s trial %d: %s=%.4f (%.1fs) %s", name, trial.number, metric, metrics[metric], seconds, params
        )
        if metrics[metric] > best["value"]:
            best.update(value=metrics[metric], metrics=metrics, params=params)
            model.save(model_dir(cfg, "fit", name))
        return metrics[metric]

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=cfg.seed), study_name=name
    )
    # A progress bar for people at a terminal; Airflow logs get one line per trial instead.
    study.optimize(objective, n_trials=cfg.n_trials, show_progress_bar=sys.stderr.isatty())
    final, seconds = _fit_timed(name, best["params"], data.train)
    final.save(model_dir(cfg, "final", name))
    return {
        "best_params": best["params"],
        "valid": best["metrics"],
        "fit_seconds": round(seconds, 3),
        "trials": len(study.trials),
    }


def check_models(cfg: RunConfig) -> None:
    """Fail fast, before any data is loaded, on an unknown model name or an empty tuning budget."""
    unknown = [name for name in cfg.models if name not in available_models()]
    if unknown or not cfg.models:
        raise StageInputError(
            f"unknown model(s) {', '.join(unknown) or '(none given)'}; available: {', '.join(available_models())}"
        )
    if cfg.n_trials < 1:
        raise StageInputError(f"n_trials must be at least 1 (got {cfg.n_trials})")


def train(cfg: RunConfig) -> TrainResult:
    """Tune and fit every model of ``cfg.models``; artifacts under ``cfg.paths.artifacts/{fit,final}/<name>``."""
    import mlflow

    check_models(cfg)
    data = load_split_data(cfg)
    setup_mlflow(cfg)
    reports: dict[str, dict[str, Any]] = {}
    with mlflow.start_run(
        run_name=f"train-{cfg.source.name}", tags=lineage_tags(cfg) | {"stage": "train"}
    ) as run:
        mlflow.log_params(
            {"models": ",".join(cfg.models), "n_trials": cfg.n_trials, "k": cfg.k, "seed": cfg.seed}
        )
        mlflow.log_params({"n_users": data.train.n_users, "n_items": data.train.n_items})
        for name in cfg.models:
            reports[name] = tune_model(name, data, cfg)
            mlflow.log_metrics(
                mlflow_metrics({f"{name}.valid_{k}": v for k, v in reports[name]["valid"].items()})
            )
            mlflow.log_params({f"{name}.{k}": v for k, v in reports[name]["best_params"].items()})
    result = TrainResult(models=reports, mlflow_run_id=run.info.run_id, artifacts=str(cfg.paths.artifacts))
    result.save(cfg.paths.reports, "train")
    return result
