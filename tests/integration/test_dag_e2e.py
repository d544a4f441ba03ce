"""The retrain DAG end to end under `airflow dags test` on real data, every component real.

ML-100k runs on the embedded defaults (SQLite for Airflow, MLflow, Feast online store, serving store). The
production profile (PostgreSQL, Redis, an MLflow server, Celery workers) is test_production_profile.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "FUSIONREC", "MLFLOW"))}
    airflow_home = home / "airflow"
    airflow_home.mkdir(parents=True, exist_ok=True)
    env.update(
        FUSIONREC_HOME=str(home),
        AIRFLOW_HOME=str(airflow_home),
        AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{airflow_home}/airflow.db",
        TF_CPP_MIN_LOG_LEVEL="2",
        GIT_PYTHON_REFRESH="quiet",
        PATH=f"{BIN}:{env.get('PATH', '')}",
    )
    env.update(extra)
    return env


def _run(args: list[str], env: dict[str, str], log: Path, timeout: int = 1500) -> str:
    proc = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    log.write_text(proc.stdout + proc.stderr)
    assert proc.returncode == 0, (
        f"{' '.join(args[:3])} failed ({proc.returncode}); tail:\n{(proc.stdout + proc.stderr)[-3000:]}"
    )
    return proc.stdout


def _run_dag(home: Path, env: dict[str, str], conf: dict) -> str:
    _run([str(BIN / "airflow"), "db", "migrate"], env, home / "migrate.log", timeout=600)
    out = _run(
        [str(BIN / "airflow"), "dags", "test", "fusionrec_retrain", "-c", json.dumps(conf)],
        env,
        home / "dag.log",
    )
    log = (home / "dag.log").read_text()
    assert "state=success" in log.split("DagRun Finished")[-1], log[-3000:]
    return out


def _fusionrec(env: dict[str, str], *args: str) -> dict:
    proc = subprocess.run(
        [str(BIN / "fusionrec"), *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def _check_run(env: dict[str, str], dataset: str) -> dict:
    status = _fusionrec(env, "status", "--json")
    champion = status["champion"]
    assert champion is not None and champion["approval"]["auto"] == "true"
    assert champion["dataset"] == dataset
    assert len(champion["git_commit"]) >= 7 and champion["dvc_data_hash"].endswith(".dir")
    assert champion["test_metrics"]["ndcg@10"] > 0
    assert status["serving"]["live_version"].startswith(f"fusionrec-v{champion['version']}-")
    return status


def _check_training_fanned_out(home: Path, models: tuple[str, ...]) -> None:
    """One train_model task instance per model (``airflow dags test`` logs each mapped instance it starts), each
    model trained in its own MLflow run of this Airflow run."""
    log = (home / "dag.log").read_text()
    started = re.findall(r"\[DAG TEST\] starting task_id=train_model map_index=(-?\d+)", log)
    assert sorted(started) == [str(i) for i in range(len(models))], started
    reports = [json.loads((home / "reports" / "train" / f"{name}.json").read_text()) for name in models]
    assert len({report["mlflow_run_id"] for report in reports}) == len(models)
    assert len({report["airflow_run_id"] for report in reports}) == 1 and reports[0]["airflow_run_id"]
    assert sorted(json.loads((home / "reports" / "train.json").read_text())["models"]) == sorted(models)


def test_dag_on_movielens_with_embedded_defaults(tmp_path: Path) -> None:
    from fusionrec.config import DEFAULT_MODELS

    home = tmp_path / "home"
    env = _env(home)
    _run_dag(home, env, {"dataset": "ml-100k", "n_trials": 2, "auto_approve": True})
    _check_training_fanned_out(home, DEFAULT_MODELS)
    status = _check_run(env, "ml-100k")
    assert status["champion"]["test_metrics"]["ndcg@10"] > 0.35  # EASE alone reaches ~0.45 under protocol 1
    answer = _fusionrec(env, "recommend", "1", "--k", "10", "--json")
    assert len(answer["items"]) == 10 and answer["cold_start"] is False
    cold = _fusionrec(env, "recommend", "no-such-user", "--json")
    assert cold["cold_start"] is True and len(cold["items"]) == 10
