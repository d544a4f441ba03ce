"""MLflow set-up and the lineage tags every run carries (git commit, DVC data hash, dataset, protocol)."""

from __future__ import annotations

import os
import subprocess
from functools import lru_cache
from pathlib import Path

from fusionrec.config import RunConfig
from pipelines.stage import load_report

REPO_ROOT = Path(__file__).resolve().parent.parent


@lru_cache(maxsize=1)
def git_commit() -> str:
    """HEAD of the checkout this code runs from, with ``-dirty`` when tracked files have changes; in an image
    without ``.git``, the commit it was built from (``FUSIONREC_GIT_COMMIT``, the Dockerfile's build arg)."""
    if not (REPO_ROOT / ".git").exists() and os.environ.get("FUSIONREC_GIT_COMMIT"):
        return os.environ["FUSIONREC_GIT_COMMIT"]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def setup_mlflow(cfg: RunConfig) -> str:
    """Point MLflow at the run's tracking store and experiment (absolute artifact root); returns experiment id."""
    import mlflow

    # MLflow exports the URIs to the environment for subprocesses, but RunConfig reads MLFLOW_TRACKING_URI as
    # a production switch: left there, a later run in this process (another home) would log into this store.
    saved = {var: os.environ.get(var) for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(cfg.tracking_uri)
    mlflow.set_registry_uri(cfg.tracking_uri)
    for var, value in saved.items():
        if value is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = value
    experiment = mlflow.get_experiment_by_name(cfg.experiment)
    if experiment is not None:
        mlflow.set_experiment(cfg.experiment)
        return experiment.experiment_id
    if cfg.tracking_uri.startswith(("http://", "https://")):
        # A tracking server stores artifacts where it was told to (--artifacts-destination), served over HTTP.
        experiment_id = mlflow.create_experiment(cfg.experiment)
    else:
        cfg.paths.mlflow_artifacts.mkdir(parents=True, exist_ok=True)
        experiment_id = mlflow.create_experiment(
            cfg.experiment, artifact_location=cfg.paths.mlflow_artifacts.as_uri()
        )
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def dvc_lock_hash(cfg: RunConfig, lock_file: Path = Path("dvc.lock")) -> str | None:
    """Under `dvc repro` the validated data is a stage output: its hash is in dvc.lock, not a version report."""
    import yaml

    if not lock_file.exists():
        return None
    stages = (yaml.safe_load(lock_file.read_text()) or {}).get("stages", {})
    for stage in stages.values():
        for out in stage.get("outs", []):
            if (Path.cwd() / out["path"]).resolve() == cfg.paths.validated:
                return str(out["md5"])
    return None


def lineage_tags(cfg: RunConfig) -> dict[str, str]:
    """Tags that tie an MLflow run to its code, data and checks."""
    version = load_report(cfg.paths.reports, "version") or {"md5": dvc_lock_hash(cfg) or "unversioned"}
    validation = load_report(cfg.paths.reports, "validate") or {}
    tags = {
        "git_commit": git_commit(),
        "dvc_data_hash": str(version.get("md5", "unversioned")),
        "dvc_quarantine_hash": str(version.get("quarantine_md5", "")),
        "dataset": cfg.source.name,
        "protocol": cfg.effective_protocol,
        "gx_result": str(validation.get("gx_result", "")),
    }
    if cfg.run_id:
        tags["airflow_run_id"] = cfg.run_id
    return tags


def mlflow_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """MLflow metric names may not contain "@": ``ndcg@10`` is logged as ``ndcg_at_10``."""
    return {key.replace("@", "_at_"): float(value) for key, value in metrics.items()}
