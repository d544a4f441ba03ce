"""The retrain DAG end to end under `airflow dags test` on real data, every component real.

ML-100k runs on the embedded defaults (SQLite for Airflow, MLflow, Feast online store, serving store).
Instacart runs in the production shape: PostgreSQL for Airflow metadata and MLflow, Redis for the Feast online
store and the serving store (skipped, with the reason, only when those services are unreachable).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.conftest import POSTGRES_HOST, POSTGRES_PORT, REDIS_HOST, REDIS_PORT, reachable

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


def _production_env() -> dict[str, str]:
    """The variables of infra/production.env (KEY=VALUE lines)."""
    lines = (REPO / "infra" / "production.env").read_text().splitlines()
    pairs = [line.split("=", 1) for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return {key.strip(): value.strip() for key, value in pairs}


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


def test_dag_on_movielens_with_embedded_defaults(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = _env(home)
    _run_dag(home, env, {"dataset": "ml-100k", "n_trials": 2, "auto_approve": True})
    status = _check_run(env, "ml-100k")
    assert status["champion"]["test_metrics"]["ndcg@10"] > 0.35  # EASE alone reaches ~0.45 under protocol 1
    answer = _fusionrec(env, "recommend", "1", "--k", "10", "--json")
    assert len(answer["items"]) == 10 and answer["cold_start"] is False
    cold = _fusionrec(env, "recommend", "no-such-user", "--json")
    assert cold["cold_start"] is True and len(cold["items"]) == 10


def test_dag_on_instacart_with_postgres_and_redis(tmp_path: Path) -> None:
    if not reachable(POSTGRES_HOST, POSTGRES_PORT):
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_HOST}:{POSTGRES_PORT}")
    if not reachable(REDIS_HOST, REDIS_PORT):
        pytest.skip(f"Redis not reachable at {REDIS_HOST}:{REDIS_PORT}")
    import psycopg2

    suffix = uuid.uuid4().hex[:8]
    databases = {kind: f"fr_{kind}_{suffix}" for kind in ("airflow", "mlflow", "optuna", "events")}
    admin = psycopg2.connect(host=POSTGRES_HOST, port=POSTGRES_PORT, user="postgres", dbname="test")
    admin.autocommit = True
    with admin.cursor() as cur:
        for name in databases.values():
            cur.execute(f"CREATE DATABASE {name}")
    home = tmp_path / "home"
    production = _production_env()
    production["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = production[
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"
    ].replace("/fusionrec_airflow", f"/{databases['airflow']}")
    production["MLFLOW_TRACKING_URI"] = production["MLFLOW_TRACKING_URI"].replace(
        "/fusionrec_mlflow", f"/{databases['mlflow']}"
    )
    production["FUSIONREC_OPTUNA_STORAGE"] = production["FUSIONREC_OPTUNA_STORAGE"].replace(
        "/fusionrec_optuna", f"/{databases['optuna']}"
    )
    production["FUSIONREC_EVENTS_URL"] = production["FUSIONREC_EVENTS_URL"].replace(
        "/fusionrec_events", f"/{databases['events']}"
    )
    production.pop("FUSIONREC_HOME")
    env = _env(home, **production)
    try:
        _run_dag(
            home,
            env,
            {
                "dataset": "instacart",
                "n_trials": 2,
                "auto_approve": True,
                "models": ["ease", "two_tower", "buy_again"],
            },
        )
        status = _check_run(env, "instacart")
        assert status["champion"]["protocol"] == "next-basket"
        assert status["serving"]["store"] == "redis"
        # ingest read the API's feedback from the PostgreSQL events store (empty on a first run)
        ingested = json.loads((home / "reports" / "ingest.json").read_text())
        assert ingested["feedback_source"].endswith(f"/{databases['events']}")
        answer = _fusionrec(env, "recommend", "1", "--json")
        assert len(answer["items"]) == 10 and answer["cold_start"] is False
        with (
            psycopg2.connect(
                host=POSTGRES_HOST, port=POSTGRES_PORT, user="postgres", dbname=databases["optuna"]
            ) as optuna_db,
            optuna_db.cursor() as cur,
        ):
            cur.execute("SELECT study_name FROM studies")
            studies = [row[0] for row in cur.fetchall()]
        assert sorted(name.split("-")[1] for name in studies) == ["buy_again", "ease", "two_tower"]
    finally:
        with admin.cursor() as cur:
            for name in databases.values():
                cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()
