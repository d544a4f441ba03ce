"""Train stage: each configured model is tuned with Optuna on the validation split (every trial a nested MLflow
run), then the best parameters are fitted twice: on ``fit`` (for fusion tuning) and on ``train`` (final).

One model is one unit of work, so models can train in parallel (the DAG maps ``train_model`` over the
models): ``prepare_training`` checks the models and readies the shared stores once, ``train_model`` tunes and
fits one model in its own MLflow run and writes ``reports/train/<model>.json``, and ``collect_training``
gathers those into ``reports/train.json`` and the stage's summary MLflow run. ``train`` does all three in one
process (CLI, ``dvc repro``).

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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from fusionrec.config import RunConfig
from models.base import Recommender
from models.registry import base_models, create_model, get_model_class
from pipelines.resources import measure
from pipelines.splitdata import HeldOut, SplitData, evaluate_recommender, load_split_data
from pipelines.stage import StageInputError, StageResult, load_report
from pipelines.tracking import lineage_tags, mlflow_metrics, setup_mlflow
from pipelines.tuning import default_trial, replay_trial

log = logging.getLogger(__name__)

PROBE_USERS = 500  # validation users scored after each epoch for pruning (the full set decides the trial)
# How long an SQLite Optuna storage waits for a lock before "database is locked": parallel train_model tasks of
# one home share the file; each writes its own study in short transactions, so a wait is brief.
SQLITE_LOCK_SECONDS = 120


@dataclass
class TrainResult(StageResult):
    models: dict[
        str, dict[str, Any]
    ]  # name -> best_params, valid metrics, train_seconds, peak_rss_mb, trials
    mlflow_run_id: str
    artifacts: str


@dataclass
class ModelTrainResult(StageResult):
    """One model tuned and fitted by ``train_model``; saved as ``reports/train/<model>.json``."""

    model: str
    report: dict[str, Any]  # what train.json lists under models[<model>]
    mlflow_run_id: str  # the model's own run (its trials are nested in it)
    airflow_run_id: str | None  # the orchestrator run that trained it (``cfg.run_id``)
    n_users: int
    n_items: int


def model_reports_dir(cfg: RunConfig) -> Path:
    """Where ``train_model`` leaves one report per model for ``collect_training``."""
    return cfg.paths.reports / "train"


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
        storage=optuna_storage(cfg),
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


def optuna_storage(cfg: RunConfig) -> Any:  # -> optuna.storages.RDBStorage
    """The studies' storage at ``cfg.optuna_url`` (creates its tables if missing); SQLite waits up to
    ``SQLITE_LOCK_SECONDS`` for a lock."""
    import optuna

    sqlite = cfg.optuna_url.startswith("sqlite")
    engine = {"connect_args": {"timeout": SQLITE_LOCK_SECONDS}} if sqlite else None
    return optuna.storages.RDBStorage(cfg.optuna_url, engine_kwargs=engine)


def prepare_training(cfg: RunConfig) -> list[str]:
    """Check the models and budgets, create the Optuna tables and the MLflow experiment, and return the models
    to train (``cfg.models`` without repeats). Run it once before training models in parallel: two processes
    creating the same tables or experiment at once can fail."""
    check_models(cfg)
    optuna_storage(cfg)  # creates the tables
    setup_mlflow(cfg)
    return list(dict.fromkeys(cfg.models))


def train_model(cfg: RunConfig, name: str, data: SplitData | None = None) -> ModelTrainResult:
    """Tune and fit one model in its own MLflow run (stage ``train_model``, tagged with the model and the
    Airflow run id); artifacts under ``cfg.paths.artifacts/{fit,final}/<name>``, report under
    ``reports/train/<name>.json``. ``data``: the loaded splits, when one process trains several models."""
    import mlflow

    check_models(replace(cfg, models=(name,)))
    if data is None:
        data = load_split_data(cfg)
    setup_mlflow(cfg)
    tags = lineage_tags(cfg) | {"stage": "train_model", "model": name}
    with mlflow.start_run(run_name=f"train-{cfg.source.name}-{name}", tags=tags) as run:
        mlflow.log_params(
            {"model": name, "n_trials": trial_budget(cfg, name)[0], "k": cfg.k, "seed": cfg.seed}
            | {"n_users": data.train.n_users, "n_items": data.train.n_items}
        )
        report = tune_model(name, data, cfg)
        mlflow.log_metrics(mlflow_metrics(_summary_metrics(report)))
        mlflow.log_params({f"best.{k}": v for k, v in report["best_params"].items()})
    result = ModelTrainResult(
        model=name,
        report=report,
        mlflow_run_id=run.info.run_id,
        airflow_run_id=cfg.run_id,
        n_users=data.train.n_users,
        n_items=data.train.n_items,
    )
    result.save(model_reports_dir(cfg), name)
    return result


def _summary_metrics(report: dict[str, Any]) -> dict[str, float]:
    """A model report's metrics as logged to MLflow: validation metrics, fit time and memory, tuning time."""
    return {f"valid_{k}": v for k, v in report["valid"].items()} | {
        k: report[k] for k in ("train_seconds", "peak_rss_mb", "tuning_seconds")
    }


def trained_models(cfg: RunConfig) -> dict[str, ModelTrainResult]:
    """The per-model reports of ``cfg.models``; a model without one (or, under an orchestrator run, with one
    from another run) is an error naming the models and what to run."""
    folder = model_reports_dir(cfg)
    found: dict[str, ModelTrainResult] = {}
    problems: list[str] = []
    for name in dict.fromkeys(cfg.models):
        saved = load_report(folder, name)
        if saved is None:
            problems.append(f"{name} (no {folder / name}.json)")
        elif cfg.run_id and saved["airflow_run_id"] != cfg.run_id:
            problems.append(f"{name} (its report is from run {saved['airflow_run_id']}, not {cfg.run_id})")
        else:
            found[name] = ModelTrainResult(**saved)
    if problems:
        raise StageInputError(
            f"not trained in this run: {'; '.join(problems)}; run train_model for these models first"
        )
    return found


def collect_training(cfg: RunConfig) -> TrainResult:
    """Gather the per-model reports of ``cfg.models`` into ``reports/train.json`` and the stage's summary MLflow
    run (stage ``train``; the models' runs become its children). Fails if a model was not trained."""
    check_models(cfg)
    trained = trained_models(cfg)
    result = TrainResult(
        models={name: model.report for name, model in trained.items()},
        mlflow_run_id=log_summary_run(cfg, trained),
        artifacts=str(cfg.paths.artifacts),
    )
    result.save(cfg.paths.reports, "train")
    return result


def log_summary_run(cfg: RunConfig, trained: dict[str, ModelTrainResult]) -> str:
    """The stage's MLflow run: every model's metrics and best parameters, prefixed by its name, as one run
    shows them side by side; the models' own runs are nested under it. Returns its run id."""
    import mlflow

    setup_mlflow(cfg)
    first = next(iter(trained.values()))
    with mlflow.start_run(
        run_name=f"train-{cfg.source.name}", tags=lineage_tags(cfg) | {"stage": "train"}
    ) as run:
        mlflow.log_params(
            {"models": ",".join(trained), "n_trials": cfg.n_trials, "k": cfg.k, "seed": cfg.seed}
            | {"n_users": first.n_users, "n_items": first.n_items}
        )
        for name, model in trained.items():
            metrics = _summary_metrics(model.report)
            mlflow.log_metrics(mlflow_metrics({f"{name}.{k}": v for k, v in metrics.items()}))
            mlflow.log_params({f"{name}.{k}": v for k, v in model.report["best_params"].items()})
            mlflow.set_tag(f"{name}.mlflow_run_id", model.mlflow_run_id)
    client = mlflow.MlflowClient()
    for model in trained.values():  # in the MLflow UI: train -> each model's run -> its trials
        client.set_tag(model.mlflow_run_id, "mlflow.parentRunId", run.info.run_id)
    return run.info.run_id


def train(cfg: RunConfig) -> TrainResult:
    """Tune and fit every model of ``cfg.models`` in this process, one after the other (``train_model`` on
    splits loaded once), then ``collect_training``."""
    names = prepare_training(cfg)
    data = load_split_data(cfg)
    for name in names:
        train_model(cfg, name, data)
    return collect_training(cfg)
