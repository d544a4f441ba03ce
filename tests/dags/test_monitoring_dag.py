"""The monitoring DAG's wiring: parse hygiene, schedule, params, and its one task calling the monitor.

Fast; the `airflow dags test` run is the slow test at the end.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType

import pytest

from tests.dags.test_retrain_dag import _PARSE_PROBE, HEAVY_PACKAGES

REPO = Path(__file__).resolve().parents[2]
DAG_FILE = REPO / "dags" / "monitoring.py"


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> str:
    return os.environ.get("AIRFLOW_HOME") or str(tmp_path_factory.mktemp("airflow-home"))


def load_dag_module(name: str = "fusionrec_dag_monitoring") -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, DAG_FILE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def monitoring(airflow_home: str) -> ModuleType:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRFLOW_HOME", airflow_home)
        mp.delenv("FUSIONREC_MONITOR_SCHEDULE", raising=False)
        return load_dag_module()


@pytest.fixture(scope="module")
def dag(monitoring: ModuleType):
    return monitoring.monitoring_dag


def test_dagbag_parses_without_errors_or_heavy_imports(airflow_home: str, tmp_path: Path) -> None:
    folder = tmp_path / "dags"
    folder.mkdir()
    (folder / "monitoring.py").write_text(DAG_FILE.read_text())  # this DAG alone
    env = {**os.environ, "AIRFLOW_HOME": airflow_home, "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    out = subprocess.run(
        [sys.executable, "-c", _PARSE_PROBE, str(folder)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["import_errors"] == {}
    assert report["dag_ids"] == ["fusionrec_monitoring"]
    assert HEAVY_PACKAGES.isdisjoint(report["top_level_modules"])


def test_one_monitor_task_hourly(dag) -> None:
    assert dag.dag_id == "fusionrec_monitoring"
    assert dag.task_ids == ["monitor"]
    assert dag.schedule == "@hourly"
    assert dag.catchup is False and dag.max_active_runs == 1
    assert {"fusionrec", "monitoring"} <= set(dag.tags)


def test_schedule_can_be_overridden_from_env(monitoring: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FUSIONREC_MONITOR_SCHEDULE", "*/15 * * * *")
    assert load_dag_module("fusionrec_dag_monitoring_15").monitoring_dag.schedule == "*/15 * * * *"


def test_param_defaults(dag) -> None:
    assert dag.params.dump() == {
        "metrics_url": None,
        "window_minutes": 60,
        "fail_on_alert": True,
        "home": None,
    }


@pytest.mark.parametrize(
    ("name", "bad_value"), [("window_minutes", 0), ("window_minutes", "1h"), ("fail_on_alert", "yes")]
)
def test_params_reject_bad_input(dag, name: str, bad_value: object) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError):
        dag.params.get_param(name).resolve(bad_value)


def test_params_map_to_the_monitor_arguments(monitoring: ModuleType) -> None:
    kwargs = monitoring.monitor_kwargs(
        {"metrics_url": "http://127.0.0.1:8000/metrics", "window_minutes": 15, "fail_on_alert": False}
    )
    assert kwargs == {
        "metrics_url": "http://127.0.0.1:8000/metrics",
        "window": timedelta(minutes=15),
        "fail_on_alert": False,
    }
    assert monitoring.monitor_kwargs({})["fail_on_alert"] is True


def test_the_task_runs_the_monitor_and_fails_on_alert(dag, tmp_path: Path) -> None:
    from fusionrec.config import RunConfig
    from pipelines.monitor import AlertsFiring
    from serving.events import FeedbackEvent, open_event_store

    home = tmp_path / "home"
    now = datetime.now(UTC)
    store = open_event_store(RunConfig.from_env(home=home))
    # 150 impressions an hour; 30 clicks a hour before, none in the last hour
    store.add(
        [
            FeedbackEvent(kind, "u1", "i1", now - timedelta(minutes=10 + 60 * hour + n * 0.2))
            for hour in range(3)
            for n in range(150)
            for kind in (("impression", "click") if hour and n < 30 else ("impression",))
        ]
    )
    store.close()
    run = dag.get_task("monitor").python_callable
    params = {**dag.params.dump(), "home": str(home)}
    with pytest.raises(AlertsFiring, match="FusionRecCTRDrop"):
        run(params=params, run_id="manual__1")
    answer = run(params={**params, "fail_on_alert": False}, run_id="manual__2")
    assert "FusionRecCTRDrop" in answer["firing"] and answer["window_minutes"] == 60.0
    assert json.loads((home / "reports" / "monitor.json").read_text())["status"] == "alerting"


@pytest.mark.slow
def test_airflow_dags_test_reports_the_alerts(tmp_path: Path) -> None:
    """`airflow dags test` of the real DAG on a home with a CTR drop and an API with many fallbacks."""
    from fusionrec.config import RunConfig
    from serving.events import FeedbackEvent, open_event_store
    from tests.integration.test_dag_e2e import BIN, _env, _run
    from tests.pipelines.test_monitor import api_metrics, serve_metrics

    home = tmp_path / "home"
    now = datetime.now(UTC)
    store = open_event_store(RunConfig.from_env(home=home))
    store.add(
        [
            FeedbackEvent(kind, f"u{n % 7}", f"i{n % 5}", now - timedelta(minutes=10 + 60 * hour + n * 0.2))
            for hour in range(3)
            for n in range(150)
            for kind in (("impression", "click") if n < (30 if hour else 5) else ("impression",))
        ]
    )
    store.close()
    env = _env(home)
    _run([str(BIN / "airflow"), "db", "migrate"], env, home / "migrate.log", timeout=600)
    with serve_metrics() as (url, page):
        page["text"] = api_metrics(requests=100, fallbacks=20)
        conf = {"metrics_url": url, "fail_on_alert": False, "window_minutes": 60}
        _run(
            [str(BIN / "airflow"), "dags", "test", "fusionrec_monitoring", "-c", json.dumps(conf)],
            env,
            home / "dag.log",
            timeout=600,
        )
    log = (home / "dag.log").read_text()
    assert "state=success" in log.split("DagRun Finished")[-1], log[-3000:]
    report = json.loads((home / "reports" / "monitor.json").read_text())
    assert {"FusionRecCTRDrop", "FusionRecHighFallbackRate"} <= set(report["firing"])
    assert report["service"]["fallback_rate"] == pytest.approx(0.2)
    assert "ALERT FusionRecCTRDrop" in log
