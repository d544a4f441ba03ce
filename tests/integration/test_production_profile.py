"""The retrain DAG in the production profile, every service real and separate, as infra/compose deploys it:

- Airflow 3: api-server, scheduler, dag-processor and a Celery worker (CeleryExecutor, Redis broker), metadata
  and Celery results in PostgreSQL; the run is triggered over the REST API like a user in the UI would;
- MLflow: a tracking server backed by PostgreSQL, serving the artifacts (no client writes them to disk);
- Feast: offline store in PostgreSQL (snapshot tables), online store in Redis;
- Optuna studies and the API's feedback events in PostgreSQL; the serving store in Redis;
- the serving API answers from what the run promoted.

Only ``FUSIONREC_PROFILE=production`` and the service addresses are set: every store switch comes from the
profile. Skipped, with the reason, only when PostgreSQL or Redis is unreachable.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import POSTGRES_HOST, POSTGRES_PORT, REDIS_HOST, REDIS_PORT, reachable
from tests.integration.airflow_stack import AirflowStack, airflow_stack, wait_for
from tests.integration.services import mlflow_server, serving_api, throwaway_databases
from tests.integration.test_dag_e2e import REPO, _env, _fusionrec

pytestmark = [pytest.mark.slow, pytest.mark.services]
DAG_ID = "fusionrec_retrain"
BROKER = f"redis://{REDIS_HOST}:{REDIS_PORT}/9"  # Celery's queues, apart from the stores in db 0
# Instacart under the next-basket protocol: a CF model, the Feast-fed two-tower (point-in-time features
# from the PostgreSQL offline store) and the repeat-purchase baseline.
CONF = {
    "dataset": "instacart",
    "models": ["ease", "two_tower", "buy_again"],
    "n_trials": 1,
    "auto_approve": True,
}


def production_env(databases: dict[str, str]) -> dict[str, str]:
    """The FusionRec variables of infra/production.env (the profile and the service addresses), with throwaway
    database names instead of the profile's; Airflow's come from the test stack, the home from the test."""
    lines = (REPO / "infra" / "production.env").read_text().splitlines()
    pairs = dict(line.split("=", 1) for line in lines if line.strip() and not line.lstrip().startswith("#"))
    env = {k: v for k, v in pairs.items() if k.startswith("FUSIONREC_") and k != "FUSIONREC_HOME"}
    assert env["FUSIONREC_PROFILE"] == "production"
    return env | {
        "FUSIONREC_OFFLINE_STORE_URL": databases["features"],
        "FUSIONREC_EVENTS_URL": databases["events"],
        "FUSIONREC_OPTUNA_STORAGE": databases["optuna"].replace("postgresql://", "postgresql+psycopg2://"),
    }


def trigger_and_wait(stack: AirflowStack, conf: dict, timeout: float) -> dict[str, str | None]:
    """Trigger one run over the REST API and wait for it to end; returns task id -> state."""
    api = stack.client()
    wait_for(
        "the DAG to be parsed",
        lambda: stack.check_alive() or api.get(f"/api/v2/dags/{DAG_ID}").is_success,
        180,
    )
    api.patch(f"/api/v2/dags/{DAG_ID}", json={"is_paused": False}).raise_for_status()
    run_id = f"production-{int(time.time())}"
    answer = api.post(
        f"/api/v2/dags/{DAG_ID}/dagRuns", json={"dag_run_id": run_id, "logical_date": None, "conf": conf}
    )
    assert answer.status_code == 200, answer.text

    def ended() -> str | None:
        stack.check_alive()
        state = api.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}").json()["state"]
        return state if state in {"success", "failed"} else None

    state = wait_for("the run to end", ended, timeout=timeout, every=5)
    tasks = api.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances").json()["task_instances"]
    states = {
        f"{ti['task_id']}[{ti['map_index']}]" if ti["map_index"] >= 0 else ti["task_id"]: ti["state"]
        for ti in tasks
    }
    assert state == "success", f"run {state}: {states}\n{stack.log_tails()}"
    return states


def test_dag_in_production_profile_on_celery_mlflow_server_postgres_and_redis(tmp_path: Path) -> None:
    for what, host, port in (("PostgreSQL", POSTGRES_HOST, POSTGRES_PORT), ("Redis", REDIS_HOST, REDIS_PORT)):
        if not reachable(host, port):
            pytest.skip(f"{what} not reachable at {host}:{port}")
    import psycopg
    import redis
    from mlflow import MlflowClient

    redis.Redis.from_url(BROKER).flushdb()  # no stale Celery messages from an aborted run
    home, artifacts = tmp_path / "home", tmp_path / "mlflow-artifacts"
    with throwaway_databases("mlflow", "features", "events", "optuna") as databases:
        production = production_env(databases)
        with mlflow_server(databases["mlflow"], artifacts, _env(home), tmp_path / "mlflow.log") as tracking:
            production["MLFLOW_TRACKING_URI"] = tracking
            with airflow_stack(home, celery_broker=BROKER, extra_env=production) as stack:
                states = trigger_and_wait(stack, CONF, timeout=1800)
                worker_log = (stack.logs / "celery-worker.log").read_text(errors="replace")
            env = stack.env
            assert states["promote"] == "success" and states["human_approval"] == "skipped", states
            assert "fusionrec_retrain" in worker_log  # the tasks ran in the separate Celery worker

            status = _fusionrec(env, "status", "--json")
            champion = status["champion"]
            assert champion["dataset"] == "instacart" and champion["protocol"] == "next-basket"
            assert champion["test_metrics"]["ndcg@10"] > 0
            assert status["serving"]["store"] == "redis"
            # MLflow: registry on the server, artifacts stored by the server only
            client = MlflowClient(tracking_uri=tracking, registry_uri=tracking)
            assert client.get_model_version_by_alias("fusionrec", "champion").version == champion["version"]
            assert any(artifacts.rglob("MLmodel")) and not (home / "mlartifacts").exists()
            # Feast: offline snapshots in PostgreSQL tables, the features stage read them from there
            features = json.loads((home / "reports" / "features.json").read_text())
            assert features["offline_store"] == "postgres" and features["online_store"] == "redis"
            with psycopg.connect(databases["features"]) as conn:
                tables = [
                    r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname='public'")
                ]
                rows = conn.execute(f'SELECT count(*) FROM "{features["project"]}__user_profile"').fetchone()[
                    0
                ]
            assert len([t for t in tables if t.startswith(features["project"])]) == 4 and rows > 0
            with psycopg.connect(databases["optuna"]) as conn:
                studies = [r[0] for r in conn.execute("SELECT study_name FROM studies")]
            assert sorted(name.split("-")[1] for name in studies) == ["buy_again", "ease", "two_tower"]
            ingested = json.loads((home / "reports" / "ingest.json").read_text())
            events_db = databases["events"].rsplit("/", 1)[1]
            assert ingested["feedback_source"].endswith(f"/{events_db}")

            with serving_api(env, tmp_path / "serve.log") as api:
                answer = httpx.get(f"{api}/recommendations/1", params={"k": 10}, timeout=30).json()
                assert len(answer["items"]) == 10 and answer["model_version"].startswith(
                    f"fusionrec-v{champion['version']}-"
                )
            # clean Feast's Redis keys and offline tables, and the serving store's keys, of this home
            from fusionrec.config import RunConfig
            from pipelines.features import feature_store
            from serving.store import open_store

            cleanup = RunConfig.from_env(
                home=home,
                profile="production",
                offline_store_url=databases["features"],
                redis_url=production["FUSIONREC_REDIS_URL"],
            )
            feature_store(cleanup).teardown()
            serving_store = open_store(cleanup)
            assert serving_store.kind == "redis" and serving_store.drop_all() > 0
            serving_store.close()
