"""Train stage: each configured model is tuned with Optuna on the validation split (every trial a nested MLflow
run), then the best parameters are fitted twice: on ``fit`` (for fusion tuning) and on ``train`` (final).

Studies live in an SQL database (``cfg.optuna_url``: SQLite in the home, PostgreSQL in production) under a
name that fingerprints the model, its search space and the split data, so a crashed or repeated run resumes
the same study and only runs the trials still missing. Iterative models report each epoch's validation
nDCG on a sample of users, and the median pruner stops trials that fall behind. Budgets are per model, by
trials (``n_trials`` / ``model_trials``) and by time (``model_seconds``).
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fusionrec.config import RunConfig
from models.base import Recommender
from models.registry import base_models, create_model, get_model_class
from pipelines.resources import measure
from pipelines.splitdata import HeldOut, SplitData, evaluate_recommender, load_split_data
from pipelines.stage import StageInputError, StageResult
from pipelines.tracking import lineage_tags, mlflow_metrics, setup_mlflow
from pipelines.tuning import default_trial, replay_trial

log = logging.getLogger(__name__)

PROBE_USERS = 500  # validation users scored after each epoch for pruning (the full set decides the trial)


@dataclass
class TrainResult(StageResult):
    models: dict[
        str, dict[str, Any]
    ]  # name -> best_params, valid metrics, train_seconds, peak_rss_mb, trials
    mlflow_run_id: str
    artifacts: str


def model_dir(cfg: RunConfig, phase: str, name: str) -> Path:
    """Where a trained model lives: phase "fit" (tuning data) or "final" (all training data)."""
    return cfg.paths.artifacts / phase / name


def trial_budget(cfg: RunConfig, name: str) -> tuple[int, float | None]:
    """(trials, seconds or None) for one model; a model without hyper-parameters needs one trial."""
    probe = replay_trial({})
    get_model_class(name).search_space(probe)
    if not probe.suggested:
        return 1, None
    return cfg.model_trials.get(name, cfg.n_trials), cfg.model_seconds.get(name)


def study_name(cfg: RunConfig, name: str) -> str:
    """Same model, search space, protocol, seed, k and split files -> same study (so it resumes)."""
    digest = hashlib.sha256()
    digest.update(inspect.getsource(get_model_class(name).search_space).encode())
    digest.update(f"{cfg.effective_protocol}|{cfg.seed}|{cfg.k}".encode())
    for split in ("fit", "valid"):
        digest.update((cfg.paths.splits / f"{split}.parquet").read_bytes())
    return f"{cfg.source.name}-{name}-{digest.hexdigest()[:12]}"


def probe(held: HeldOut, n_users: int, seed: int) -> HeldOut:
    """A fixed random sample of a held-out set's users, for cheap per-epoch checks."""
    if held.n_users <= n_users:
        return held
    rows = np.sort(np.random.default_rng(seed).choice(held.n_users, n_users, replace=False))
    return HeldOut(held.user_idx[rows], held.relevant[rows], held.n_relevant[rows], held.exclude)


def _fit(name: str, params: dict[str, Any], data: Any) -> tuple[Recommender, Any]:
    with measure() as usage:
        model = create_model(name, **params).fit(data)
    return model, usage


def tune_model(name: str, data: SplitData, cfg: RunConfig) -> dict[str, Any]:
    """Optuna study for one model; keeps the best fit-phase model on disk and returns its report."""
    import mlflow
    import optuna

    model_class = get_model_class(name)
    metric = f"ndcg@{cfg.k}"
    tags = lineage_tags(cfg) | {"model": name, "stage": "trial"}
    probe_set = probe(data.valid, PROBE_USERS, cfg.seed)
    saved: dict[str, Any] = {"value": float("-inf"), "trial": None}

    def objective(trial: optuna.Trial) -> float:
        params = model_class.search_space(trial)
        trial.set_user_attr("params", params)
        model = create_model(name, **params)

        def on_epoch(epoch: int) -> None:
            trial.report(evaluate_recommender(model, probe_set, cfg.k)[metric], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"epoch {epoch}: behind the median of earlier trials")

        model.epoch_callback = on_epoch
        with mlflow.start_run(run_name=f"{name}-trial-{trial.number}", nested=True):
            mlflow.set_tags(tags | {"trial": str(trial.number)})
            mlflow.log_params(params)
            try:
                with measure() as usage:
                    model.fit(data.fit)
            except optuna.TrialPruned:
                mlflow.set_tag("pruned", "true")
                log.info("%s trial %d pruned", name, trial.number)
                raise
            model.epoch_callback = None
            metrics = evaluate_recommender(model, data.valid, cfg.k)
            trial.set_user_attr("metrics", metrics)
            mlflow.log_metrics(
                mlflow_metrics(
                    {f"valid_{k}": v for k, v in metrics.items()}
                    | {"fit_seconds": usage.seconds, "peak_rss_mb": usage.peak_rss_mb}
                )
            )
        log.info(
            "%s trial %d: %s=%.4f (%.1fs) %s",
            name,
            trial.number,
            metric,
            metrics[metric],
            usage.seconds,
            params,
        )
        if metrics[metric] > saved["value"]:
            saved.update(value=metrics[metric], trial=trial.number)
            model.save(model_dir(cfg, "fit", name))
        return metrics[metric]

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=study_name(cfg, name),
        storage=cfg.optuna_url,
        load_if_exists=True,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=cfg.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
    )
    if not study.trials:
        study.enqueue_trial(default_trial(model_class))  # start from the defaults, then search around them
    trials, seconds = trial_budget(cfg, name)
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    done = sum(t.state in finished for t in study.trials)
    if done:
        log.info("%s: resuming study %s with %d finished trial(s)", name, study.study_name, done)
    start = time.perf_counter()
    if done < trials:
        # A progress bar for people at a terminal; Airflow logs get one line per trial instead.
        study.optimize(
            objective, n_trials=trials - done, timeout=seconds, show_progress_bar=sys.stderr.isatty()
        )
    tuning_seconds = time.perf_counter() - start
    best = study.best_trial
    if saved["trial"] != best.number:  # the best trial ran in an earlier, resumed process: refit it
        _fit(name, best.user_attrs["params"], data.fit)[0].save(model_dir(cfg, "fit", name))
    final, usage = _fit(name, best.user_attrs["params"], data.train)
    final.save(model_dir(cfg, "final", name))
    log_study_plots(study, name)
    states = [t.state.name.lower() for t in study.trials]
    return {
        "best_params": best.user_attrs["params"],
        "valid": best.user_attrs["metrics"],
        "train_seconds": round(usage.seconds, 3),
        "peak_rss_mb": round(usage.peak_rss_mb, 1),
        "tuning_seconds": round(tuning_seconds, 3),
        "trials": len(states),
        "pruned": states.count("pruned"),
        "study": study.study_name,
    }


def log_study_plots(study: Any, name: str) -> None:
    """Optimisation history and parameter importance as PNG artifacts of the active MLflow run."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow
    from optuna.visualization import matplotlib as optuna_plots

    plots = {"history": optuna_plots.plot_optimization_history}
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    if len(complete) >= 2 and any(t.params for t in complete):
        plots["importance"] = optuna_plots.plot_param_importances
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna marks its matplotlib plots experimental
        for kind, plot in plots.items():
            try:
                axes = plot(study)
            except (ValueError, RuntimeError) as error:  # e.g. importance with one distinct value
                log.info("%s: no %s plot (%s)", name, kind, error)
                continue
            path = Path(folder) / f"{name}_{kind}.png"
            axes.figure.savefig(path, dpi=100, bbox_inches="tight")
            plt.close(axes.figure)
            mlflow.log_artifact(str(path), artifact_path=f"optuna/{name}")


def check_models(cfg: RunConfig) -> None:
    """Fail fast, before any data is loaded, on an unknown model name or an empty tuning budget."""
    unknown = [name for name in cfg.models if name not in base_models()]
    if unknown or not cfg.models:
        raise StageInputError(
            f"unknown model(s) {', '.join(unknown) or '(none given)'}; available: {', '.join(base_models())}"
        )
    budgets = [cfg.n_trials, *cfg.model_trials.values()]
    if min(budgets) < 1:
        raise StageInputError(f"trial budgets must be at least 1 (got {min(budgets)})")


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
            report = reports[name]
            mlflow.log_metrics(
                mlflow_metrics(
                    {f"{name}.valid_{k}": v for k, v in report["valid"].items()}
                    | {f"{name}.{k}": report[k] for k in ("train_seconds", "peak_rss_mb", "tuning_seconds")}
                )
            )
            mlflow.log_params({f"{name}.{k}": v for k, v in report["best_params"].items()})
    result = TrainResult(models=reports, mlflow_run_id=run.info.run_id, artifacts=str(cfg.paths.artifacts))
    result.save(cfg.paths.reports, "train")
    return result
