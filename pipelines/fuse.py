"""Fuse-and-select stage: a weighted blend of the models' normalised scores, weights tuned by Optuna on the
validation split; the best of the single models and the blend (by validation nDCG@k) is selected and packaged
as a bundle fitted on all training data."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from fusionrec.config import RunConfig
from models.base import Recommender
from models.blend import WeightedBlend, normalize_scores
from pipelines.bundle import Bundle
from pipelines.splitdata import REPEATS_ALLOWED, HeldOut, evaluate_scores, load_split_data
from pipelines.stage import StageInputError, StageResult, load_report
from pipelines.tracking import lineage_tags, mlflow_metrics, setup_mlflow
from pipelines.train import model_dir

log = logging.getLogger(__name__)

BLEND = "blend"
NORMALIZATION = "minmax"


@dataclass
class SelectionResult(StageResult):
    selected: str  # a model name or "blend"
    reason: str
    candidates: dict[str, dict[str, float]]  # name -> validation metrics
    weights: dict[str, float]  # blend weights (empty when there is one model)
    bundle: str  # folder of the selected, deployable bundle
    mlflow_run_id: str


def tune_blend_weights(
    scores: dict[str, np.ndarray], held: HeldOut, k: int, n_trials: int, seed: int
) -> tuple[dict[str, float], dict[str, float]]:
    """Optuna over non-negative weights (normalised to sum 1) maximising validation nDCG@k."""
    import optuna

    names = sorted(scores)
    metric = f"ndcg@{k}"

    def blend(weights: dict[str, float]) -> np.ndarray:
        return sum(weights[n] * scores[n] for n in names)

    def objective(trial: optuna.Trial) -> float:
        raw = {n: trial.suggest_float(n, 0.0, 1.0) for n in names}
        total = sum(raw.values()) or 1.0
        weights = {n: w / total for n, w in raw.items()}
        trial.set_user_attr("weights", weights)
        return evaluate_scores(blend(weights), held, k)[metric]

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.enqueue_trial({n: 1.0 for n in names})  # the equal-weight blend is always tried
    study.optimize(objective, n_trials=n_trials)
    weights = study.best_trial.user_attrs["weights"]
    return weights, evaluate_scores(blend(weights), held, k)


def fuse_and_select(cfg: RunConfig) -> SelectionResult:
    """Compare single models and their blend on validation; save the winner as ``artifacts/selected``."""
    import mlflow

    trained = load_report(cfg.paths.reports, "train")
    if not trained:
        raise StageInputError("no trained models: run the train stage first")
    names = sorted(trained["models"])
    data = load_split_data(cfg, with_features=False)  # fitted models score without side features
    candidates = {name: trained["models"][name]["valid"] for name in names}
    weights: dict[str, float] = {}
    if len(names) > 1:
        fit_models = {name: Recommender.load(model_dir(cfg, "fit", name)) for name in names}
        scores = {
            n: normalize_scores(m.score(data.valid.user_idx), NORMALIZATION) for n, m in fit_models.items()
        }
        weights, candidates[BLEND] = tune_blend_weights(
            scores, data.valid, cfg.k, n_trials=max(40, 10 * cfg.n_trials), seed=cfg.seed
        )
    metric = f"ndcg@{cfg.k}"
    selected = max(candidates, key=lambda n: candidates[n][metric])
    runner_up = sorted((c[metric], n) for n, c in candidates.items() if n != selected)
    reason = f"highest validation {metric} {candidates[selected][metric]:.4f}" + (
        f" (next: {runner_up[-1][1]} {runner_up[-1][0]:.4f})" if runner_up else ""
    )
    final: dict[str, Recommender] = {name: Recommender.load(model_dir(cfg, "final", name)) for name in names}
    if selected == BLEND:
        model: Recommender = WeightedBlend.from_models(final, [weights[n] for n in final])
    else:
        model = final[selected]
    bundle_dir = cfg.paths.artifacts / "selected"
    repeats = cfg.effective_protocol in REPEATS_ALLOWED
    Bundle.from_training(model, data.train, repeats, seen=data.seen).save(bundle_dir)

    setup_mlflow(cfg)
    with mlflow.start_run(
        run_name=f"select-{cfg.source.name}", tags=lineage_tags(cfg) | {"stage": "select"}
    ) as run:
        mlflow.set_tags({"selected": selected, "selection_reason": reason})
        mlflow.log_params({f"weight.{n}": round(w, 4) for n, w in weights.items()} | {"selected": selected})
        for name, metrics in candidates.items():
            mlflow.log_metrics(mlflow_metrics({f"{name}.valid_{k}": v for k, v in metrics.items()}))
    log.info("selected %s: %s", selected, reason)
    result = SelectionResult(selected, reason, candidates, weights, str(bundle_dir), run.info.run_id)
    result.save(cfg.paths.reports, "select")
    return result
