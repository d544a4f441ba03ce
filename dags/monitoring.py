"""FusionRec monitoring DAG: one task evaluating the alert rules of ``infra/monitoring/alerts.yml`` over the
feedback events and the API's /metrics (``pipelines.monitor.monitor``), hourly.

Thin wiring like dags/retrain.py: the task imports the library when it runs, never at parse time.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

from airflow.sdk import Param, dag, task

DAG_ID = "fusionrec_monitoring"

DOC_MD = """
### FusionRec monitoring

One task, `monitor`: CTR and CVR of the feedback events over the last `window_minutes` against the 24 windows
before (overall and per experiment arm), PSI drift of the event mix and item popularity, and — when
`metrics_url` (or `FUSIONREC_METRICS_URL`) points at the API's `/metrics` — fallback rate, 5xx rate and
latency p99. It evaluates the rules of `infra/monitoring/alerts.yml` (the same file Prometheus loads) and
writes `reports/monitor.json`, `monitor.png` and `monitor.prom` in the FusionRec home.

With `fail_on_alert` (default) a firing alert fails the task, so the run shows red and Airflow's failure
notifications apply. Runs `@hourly` (set `FUSIONREC_MONITOR_SCHEDULE` for another cron/preset).
"""


def monitor_kwargs(params: dict[str, Any]) -> dict[str, Any]:
    """DAG params -> keyword arguments of ``pipelines.monitor.monitor`` (besides the config)."""
    from datetime import timedelta

    return {
        "metrics_url": params.get("metrics_url") or None,
        "window": timedelta(minutes=int(params.get("window_minutes") or 60)),
        "fail_on_alert": bool(params.get("fail_on_alert", True)),
    }


@dag(
    dag_id=DAG_ID,
    schedule=os.environ.get("FUSIONREC_MONITOR_SCHEDULE", "@hourly"),
    start_date=datetime(2025, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "fusionrec", "retries": 0},
    tags=["fusionrec", "monitoring", "mlops"],
    doc_md=DOC_MD,
    params={
        "metrics_url": Param(
            None,
            type=["null", "string"],
            description="The API's /metrics (e.g. http://127.0.0.1:8000/metrics); "
            "empty: FUSIONREC_METRICS_URL, else the service rules are skipped.",
        ),
        "window_minutes": Param(
            60,
            type="integer",
            minimum=1,
            description="Window checked; the 24 windows before are the baseline.",
        ),
        "fail_on_alert": Param(True, type="boolean", description="Fail the task when an alert fires."),
        "home": Param(None, type=["null", "string"], description="Override FUSIONREC_HOME."),
    },
)
def fusionrec_monitoring() -> None:
    @task
    def monitor(params: dict | None = None, run_id: str | None = None) -> dict:
        from fusionrec.config import RunConfig
        from pipelines.monitor import monitor as run_monitor

        params = params or {}
        cfg = RunConfig.from_env(home=params.get("home"), run_id=run_id)
        return run_monitor(cfg, **monitor_kwargs(params)).to_dict()

    monitor()


monitoring_dag = fusionrec_monitoring()
