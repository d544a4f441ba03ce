"""What is deployed: champion and challenger from the MLflow registry, and the version live in serving."""

from __future__ import annotations

import json
from typing import Any

from fusionrec.config import RunConfig
from pipelines.register import CHALLENGER, CHAMPION, alias_version
from pipelines.stage import load_report
from pipelines.tracking import setup_mlflow

_LINEAGE_TAGS = (
    "git_commit",
    "dvc_data_hash",
    "gx_result",
    "dataset",
    "protocol",
    "selected",
    "airflow_run_id",
)


def _alias(cfg: RunConfig, alias: str) -> dict[str, Any] | None:
    mv = alias_version(cfg, alias)
    if mv is None:
        return None
    tags = mv.tags
    return {
        "version": str(mv.version),
        "run_id": mv.run_id,
        "created": mv.creation_timestamp,
        "test_metrics": json.loads(tags.get("test_metrics", "{}")),
        "valid_metrics": json.loads(tags.get("valid_metrics", "{}")),
        "approval": {k.removeprefix("approval."): v for k, v in tags.items() if k.startswith("approval.")},
        **{k: tags.get(k, "") for k in _LINEAGE_TAGS},
    }


def status(cfg: RunConfig) -> dict[str, Any]:
    """Champion, challenger and serving state as one JSON-friendly dict."""
    from serving.store import open_store

    setup_mlflow(cfg)
    store = open_store(cfg)
    validation = load_report(cfg.paths.reports, "validate") or {}
    drift = load_report(cfg.paths.reports, "drift") or {}
    return {
        "model": cfg.registered_model,
        "tracking_uri": cfg.tracking_uri,
        CHAMPION: _alias(cfg, CHAMPION),
        CHALLENGER: _alias(cfg, CHALLENGER),
        "serving": {
            "store": cfg.serving_store,
            "live_version": store.live_version(),
            "previous_version": store.previous_version(),
            "live_meta": store.meta() if store.live_version() else {},
        },
        "last_validation": {
            k: validation.get(k)
            for k in ("accepted", "rejected", "reasons", "quarantine", "gx_result", "data_docs")
        },
        "last_drift": {k: drift.get(k) for k in ("status", "message", "report", "plot")},
    }
