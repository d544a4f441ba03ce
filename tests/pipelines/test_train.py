"""The train stage split for parallel training: collect_training refuses models not trained in this run; two
train_model processes at once on the SQLite Optuna and MLflow stores, then collect_training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fusionrec.config import RunConfig
from pipelines.stage import StageInputError, load_report
from pipelines.train import ModelTrainResult, collect_training, model_reports_dir, prepare_training

REPO = Path(__file__).resolve().parents[2]


def model_report(name: str, airflow_run_id: str | None) -> ModelTrainResult:
    report = {
        "best_params": {},
        "valid": {"ndcg@10": 0.1},
        "train_seconds": 1.0,
        "peak_rss_mb": 100.0,
        "tuning_seconds": 2.0,
        "trials": 1,
        "pruned": 0,
        "study": f"shop-{name}-0",
    }
    return ModelTrainResult(name, report, "mlflow-run", airflow_run_id, n_users=3, n_items=4)


def test_collect_training_names_each_model_not_trained_in_this_run(home: Path) -> None:
    cfg = RunConfig.from_env(
        home=home, models=("ease", "itemknn", "popularity"), run_id="manual__2", mlflow_tracking_uri="unused"
    )
    model_report("ease", "manual__2").save(model_reports_dir(cfg), "ease")
    model_report("itemknn", "manual__1").save(model_reports_dir(cfg), "itemknn")  # an earlier run's
    with pytest.raises(StageInputError) as error:
        collect_training(cfg)
    message = str(error.value)
    assert message.startswith("not trained in this run: itemknn (its report is from run manual__1, not ")
    assert f"popularity (no {home.resolve()}/reports/train/popularity.json)" in message
    assert "ease" not in message and message.endswith("run train_model for these models first")
    assert not (cfg.paths.reports / "train.json").exists()  # nothing half-collected


def test_outside_an_orchestrator_run_any_report_counts(home: Path) -> None:
    cfg = RunConfig.from_env(home=home, models=("ease", "itemknn"), mlflow_tracking_uri="unused")
    model_report("ease", "manual__1").save(model_reports_dir(cfg), "ease")
    with pytest.raises(StageInputError, match=r"not trained in this run: itemknn \(no .*itemknn.json\);"):
        collect_training(cfg)


# One model in a fresh process, as a mapped Airflow task runs it. EASE and ItemKNN use no side features: the
# splits are read without Feast, so the test needs no feature build.
_TRAIN_ONE = """
import functools, json, sys
import pipelines.train
from fusionrec.config import RunConfig
pipelines.train.load_split_data = functools.partial(pipelines.train.load_split_data, with_features=False)
pipelines.train.train_model(RunConfig.from_dict(json.loads(sys.argv[1])), sys.argv[2])
"""


@pytest.mark.slow  # two training processes and an MLflow database (~30 s)
def test_models_train_in_parallel_processes_on_sqlite_then_collect(home: Path) -> None:
    import mlflow

    from tests.pipelines.test_approve import write_splits

    write_splits(home)
    cfg = RunConfig.from_env(home=home, models=("ease", "itemknn"), n_trials=3, run_id="manual__1")
    assert prepare_training(cfg) == ["ease", "itemknn"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW", "FUSIONREC"))}
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-c", _TRAIN_ONE, json.dumps(cfg.to_dict()), name],
            cwd=REPO,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in cfg.models
    }
    for name, proc in procs.items():
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0 and "database is locked" not in err, f"{name}:\n{err[-3000:]}"

    result = collect_training(cfg)
    reports = {name: load_report(model_reports_dir(cfg), name) for name in cfg.models}
    assert result.models == {name: saved["report"] for name, saved in reports.items()}
    assert load_report(cfg.paths.reports, "train") == result.to_dict()
    assert {saved["report"]["trials"] for saved in reports.values()} == {3}

    client = mlflow.MlflowClient(tracking_uri=cfg.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name(cfg.experiment).experiment_id])
    by_id = {run.info.run_id: run.data.tags for run in runs}
    model_runs = {name: by_id[saved["mlflow_run_id"]] for name, saved in reports.items()}
    for name, tags in model_runs.items():
        assert (tags["stage"], tags["model"], tags["airflow_run_id"]) == ("train_model", name, "manual__1")
        assert tags["mlflow.parentRunId"] == result.mlflow_run_id  # nested under the stage's summary run
    assert by_id[result.mlflow_run_id]["stage"] == "train"
    trial_parents = [tags["mlflow.parentRunId"] for tags in by_id.values() if "trial" in tags]
    assert sorted(trial_parents) == sorted(reports[n]["mlflow_run_id"] for n in cfg.models for _ in range(3))
