"""Fuse-and-select stage: fusions of the trained models are tuned on the validation split and compared with the
single models; the best (by validation nDCG@k) is selected and packaged as a bundle fitted on all training data.

Fusions (``cfg.fusions``):
- ``blend``: weighted sum of per-user min-max normalised scores, weights by Optuna;
- ``rrf``: reciprocal-rank fusion, weights, rank constant and depth by Optuna;
- ``stacking``: LightGBM lambdarank over the union of the models' top lists with their scores, ranks and
  Feast user/item features, trained on the validation fold. Its validation metrics are out-of-fold (2-fold
  cross-fitting over validation users), so it is not judged on its own training labels; the ranker that ships
  is then trained on all validation users. Test data is never read here.
Every fusion is saved (``artifacts/fusions/<name>``, over the final models) so the evaluate stage and the
benchmark report it like any model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from fusionrec.config import RunConfig
from models.base import Recommender
from models.blend import WeightedBlend, normalize_scores
from models.rank_fusion import ReciprocalRankFusion
from models.stacking import Stacking
from pipelines.bundle import Bundle
from pipelines.metrics import paired_bootstrap_ci
from pipelines.resources import measure
from pipelines.splitdata import REPEATS_ALLOWED, SplitData, evaluate_scores, load_split_data, user_metric
from pipelines.stage import StageInputError, StageResult, load_report
from pipelines.tracking import lineage_tags, mlflow_metrics, setup_mlflow
from pipelines.train import model_dir
from pipelines.tuning import replay_trial

log = logging.getLogger(__name__)

BLEND, RRF, STACKING = "blend", "rrf", "stacking"
NORMALIZATION = "minmax"


@dataclass
class SelectionResult(StageResult):
    selected: str  # a model name or a fusion name
    reason: str
    candidates: dict[str, dict[str, float]]  # name -> validation metrics
    fusions: dict[str, dict[str, Any]]  # fusion name -> params, train_seconds, peak_rss_mb
    weights: dict[str, float]  # blend weights (empty without a blend)
    bundle: str  # folder of the selected, deployable bundle
    mlflow_run_id: str


@dataclass
class Fusion:
    """A tuned fusion: its parameters, validation scores and how to build it over the final models."""

    params: dict[str, Any]
    valid_scores: np.ndarray  # (valid users, n_items)
    build: Callable[[dict[str, Recommender]], Recommender]


class BestScores:
    """The validation score matrix of the best trial so far (first of equals, as Optuna's ``best_trial``), so
    the winner's scores are kept instead of computed again after the study."""

    def __init__(self) -> None:
        self.value = float("-inf")
        self.scores: np.ndarray | None = None

    def keep(self, value: float, scores: np.ndarray) -> float:
        if value > self.value:
            self.value, self.scores = value, scores
        return value


def fusions_dir(cfg: RunConfig) -> Any:
    return cfg.paths.artifacts / "fusions"


def _study(seed: int) -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))


def tune_blend(fit_models: dict[str, Recommender], data: SplitData, cfg: RunConfig) -> Fusion:
    """Optuna over non-negative weights (normalised to sum 1) maximising validation nDCG@k."""
    names = sorted(fit_models)
    scores = {n: normalize_scores(fit_models[n].score(data.valid.user_idx), NORMALIZATION) for n in names}
    metric = f"ndcg@{cfg.k}"

    def blend(weights: dict[str, float]) -> np.ndarray:
        return sum(weights[n] * scores[n] for n in names)

    def objective(trial: Any) -> float:
        raw = {n: trial.suggest_float(n, 0.0, 1.0) for n in names}
        total = sum(raw.values()) or 1.0
        weights = {n: w / total for n, w in raw.items()}
        trial.set_user_attr("weights", weights)
        return evaluate_scores(blend(weights), data.valid, cfg.k)[metric]

    study = _study(cfg.seed)
    study.enqueue_trial({n: 1.0 for n in names})  # the equal-weight blend is always tried
    study.optimize(objective, n_trials=max(40, 10 * cfg.n_trials))
    weights = study.best_trial.user_attrs["weights"]
    return Fusion(
        {"weights": weights, "normalize": NORMALIZATION},
        blend(weights),
        lambda final: WeightedBlend.from_models(final, weights, normalize=NORMALIZATION),
    )


def tune_rrf(fit_models: dict[str, Recommender], data: SplitData, cfg: RunConfig) -> Fusion:
    """Optuna over per-model weights, the rank constant c and the list depth."""
    names = sorted(fit_models)
    parts = {n: fit_models[n] for n in names}
    metric = f"ndcg@{cfg.k}"
    exclude = data.valid.exclude
    best = BestScores()

    def objective(trial: Any) -> float:
        params = ReciprocalRankFusion.weight_space(trial, names)
        fusion = ReciprocalRankFusion.from_models(parts, seen=exclude, **_without(params, "components"))
        scores = fusion.score(data.valid.user_idx)
        return best.keep(evaluate_scores(scores, data.valid, cfg.k)[metric], scores)

    study = _study(cfg.seed)
    study.enqueue_trial({f"weight_{n}": 1.0 for n in names} | {"c": 60.0, "depth": 100})  # classic RRF
    study.optimize(objective, n_trials=max(20, 5 * cfg.n_trials))
    params = _without(ReciprocalRankFusion.weight_space(replay_trial(study.best_params), names), "components")
    seen = None if cfg.effective_protocol in REPEATS_ALLOWED else data.train.matrix
    return Fusion(
        params, best.scores, lambda final: ReciprocalRankFusion.from_models(final, seen=seen, **params)
    )


def tune_stacking(fit_models: dict[str, Recommender], data: SplitData, cfg: RunConfig) -> Fusion:
    """Optuna over the LightGBM parameters, judged by out-of-fold validation nDCG@k; candidates built once."""
    metric = f"ndcg@{cfg.k}"
    valid = data.valid
    stack = Stacking.from_models(fit_models, data.fit, seen=valid.exclude, seed=cfg.seed)
    candidates = stack.candidates(valid.user_idx)
    defaults = {k: stack.params[k] for k in Stacking.search_space(replay_trial({}))}
    best = BestScores()

    def objective(trial: Any) -> float:
        stack.params.update(Stacking.search_space(trial))
        scores = stack.cross_fitted_scores(valid.user_idx, valid.relevant, candidates=candidates)
        return best.keep(evaluate_scores(scores, valid, cfg.k)[metric], scores)

    study = _study(cfg.seed)
    study.enqueue_trial(defaults)
    study.optimize(objective, n_trials=max(4, cfg.n_trials))
    params = Stacking.search_space(replay_trial(study.best_params))
    stack.params.update(params)
    ranker = stack.train_ranker(candidates, valid.relevant)
    seen = None if cfg.effective_protocol in REPEATS_ALLOWED else data.train.matrix
    params = params | {"depth": stack.depth, "seed": cfg.seed}

    def build(final: dict[str, Recommender]) -> Recommender:
        model = Stacking.from_models(final, data.train, seen=seen, **params)
        model.ranker_ = ranker
        return model

    return Fusion(params, best.scores, build)


TUNERS: dict[str, Callable[[dict[str, Recommender], SplitData, RunConfig], Fusion]] = {
    BLEND: tune_blend,
    RRF: tune_rrf,
    STACKING: tune_stacking,
}
MIN_MODELS = {BLEND: 2, RRF: 2, STACKING: 1}


def _without(params: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in params.items() if k != key}


def select(
    candidates: dict[str, dict[str, float]],
    singles: list[str],
    ci: dict[str, float] | None,
    k: int,
    require_significance: bool,
) -> tuple[str, str]:
    """The selected candidate and why. The best fusion replaces the best single model only when it is better on
    validation, and (with ``require_significance``) when the bootstrap CI of the gain lies above zero: a
    fusion that is not reliably better is not worth its extra parts."""
    metric = f"ndcg@{k}"
    best_single = max(singles, key=lambda n: candidates[n][metric])
    fusions = [n for n in candidates if n not in singles]
    best_fusion = max(fusions, key=lambda n: candidates[n][metric]) if fusions else None
    single_reason = f"best single model by validation {metric} {candidates[best_single][metric]:.4f}"
    if best_fusion is None:
        return best_single, single_reason
    gain = (
        f"{best_fusion} {candidates[best_fusion][metric]:.4f} vs {best_single}: {ci['difference']:+.4f} "
        f"[95% CI {ci['low']:+.4f}, {ci['high']:+.4f}] over validation users"
    )
    if candidates[best_fusion][metric] <= candidates[best_single][metric]:
        return best_single, f"{single_reason}; no fusion did better (best: {gain})"
    if require_significance and ci["low"] <= 0:
        return best_single, f"{single_reason}; the best fusion's gain is within noise ({gain})"
    return best_fusion, f"highest validation {metric}: {gain}"


def fuse_and_select(cfg: RunConfig) -> SelectionResult:
    """Tune fusions, compare them with single models on validation, save every fusion and the winner."""
    import mlflow

    trained = load_report(cfg.paths.reports, "train")
    if not trained:
        raise StageInputError("no trained models: run the train stage first")
    unknown = sorted(set(cfg.fusions) - set(TUNERS))
    if unknown:
        raise StageInputError(f"unknown fusion(s) {', '.join(unknown)}; available: {', '.join(TUNERS)}")
    names = sorted(trained["models"])
    fusions = [f for f in cfg.fusions if len(names) >= MIN_MODELS[f]]
    data = load_split_data(cfg, with_features=STACKING in fusions)
    metric = f"ndcg@{cfg.k}"
    candidates = {name: trained["models"][name]["valid"] for name in names}
    fit_models = {name: Recommender.load(model_dir(cfg, "fit", name)) for name in names}
    tuned: dict[str, Fusion] = {}
    usage: dict[str, dict[str, float]] = {}
    for fusion in fusions:
        log.info("tuning fusion %s over %s", fusion, ", ".join(names))
        with measure() as used:
            tuned[fusion] = TUNERS[fusion](fit_models, data, cfg)
        usage[fusion] = {"train_seconds": round(used.seconds, 3), "peak_rss_mb": round(used.peak_rss_mb, 1)}
        candidates[fusion] = evaluate_scores(tuned[fusion].valid_scores, data.valid, cfg.k)
        log.info(
            "fusion %s: validation %s=%.4f %s",
            fusion,
            metric,
            candidates[fusion][metric],
            tuned[fusion].params,
        )
    ci = None
    if tuned:
        best_single = max(names, key=lambda n: candidates[n][metric])
        best_fusion = max(tuned, key=lambda n: candidates[n][metric])
        ci = paired_bootstrap_ci(
            user_metric(tuned[best_fusion].valid_scores, data.valid, cfg.k),
            user_metric(fit_models[best_single].score(data.valid.user_idx), data.valid, cfg.k),
            seed=cfg.seed,
        )
    selected, reason = select(candidates, names, ci, cfg.k, cfg.fusion_needs_significance)

    final = {name: Recommender.load(model_dir(cfg, "final", name)) for name in names}
    built: dict[str, Recommender] = {}
    for fusion, outcome in tuned.items():
        built[fusion] = outcome.build(final)
        built[fusion].save(fusions_dir(cfg) / fusion)
    model = built.get(selected) or final[selected]
    bundle_dir = cfg.paths.artifacts / "selected"
    repeats = cfg.effective_protocol in REPEATS_ALLOWED
    Bundle.from_training(model, data.train, repeats, seen=data.seen).save(bundle_dir)

    setup_mlflow(cfg)
    with mlflow.start_run(
        run_name=f"select-{cfg.source.name}", tags=lineage_tags(cfg) | {"stage": "select"}
    ) as run:
        mlflow.set_tags({"selected": selected, "selection_reason": reason[:5000]})
        mlflow.log_params({"selected": selected, "fusions": ",".join(fusions)})
        for fusion, outcome in tuned.items():
            mlflow.log_params({f"{fusion}.{k}": _short(v) for k, v in outcome.params.items()})
        for name, metrics in candidates.items():
            mlflow.log_metrics(mlflow_metrics({f"{name}.valid_{k}": v for k, v in metrics.items()}))
    log.info("selected %s: %s", selected, reason)
    weights = tuned[BLEND].params["weights"] if BLEND in tuned else {}
    result = SelectionResult(
        selected,
        reason,
        candidates,
        {f: {"params": _jsonable(t.params)} | usage[f] for f, t in tuned.items()},
        weights,
        str(bundle_dir),
        run.info.run_id,
    )
    result.save(cfg.paths.reports, "select")
    return result


def _short(value: Any) -> str:
    """MLflow params are strings of bounded length: round floats, shorten containers."""
    if isinstance(value, dict):
        return ",".join(f"{k}={_short(v)}" for k, v in value.items())[:500]
    if isinstance(value, list | tuple):
        return ",".join(_short(v) for v in value)[:500]
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)[:500]


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    return {k: (float(v) if isinstance(v, np.floating) else v) for k, v in params.items()}
