"""Register stage: the selected bundle becomes an MLflow pyfunc model version with alias ``challenger``."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from importlib.metadata import version as package_version
from typing import Any

import pandas as pd

from fusionrec.config import RunConfig
from pipelines.stage import StageInputError, StageResult, load_report
from pipelines.tracking import REPO_ROOT, lineage_tags, mlflow_metrics, setup_mlflow

log = logging.getLogger(__name__)

CHALLENGER = "challenger"
CHAMPION = "champion"
_REQUIREMENTS = ("mlflow", "numpy", "scipy", "pandas", "lightgbm", "tensorflow-cpu")


def alias_version(cfg: RunConfig, alias: str) -> Any | None:
    """The registry's model version behind ``alias`` (an MLflow ``ModelVersion``), or None if unset."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return MlflowClient().get_model_version_by_alias(cfg.registered_model, alias)
    except MlflowException:
        return None


@dataclass
class RegisterResult(StageResult):
    model_name: str
    version: str
    model_uri: str
    mlflow_run_id: str
    selected: str
    test: dict[str, float]  # test metrics of the selection
    valid: dict[str, float]


def register(cfg: RunConfig) -> RegisterResult:
    """Log the selected bundle as a pyfunc (signature, input example, component artifacts), register it and
    point the ``challenger`` alias at the new version, tagged with metrics and lineage."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.models import infer_signature

    from pipelines.pyfunc_model import RecommenderModel

    selection = load_report(cfg.paths.reports, "select")
    evaluation = load_report(cfg.paths.reports, "evaluate")
    if not selection or not evaluation:
        raise StageInputError("nothing to register: run the fuse and evaluate stages first")
    bundle_dir = cfg.paths.artifacts / "selected"
    example = pd.DataFrame({"user_id": ["1", "2"], "k": [10, 10]})
    python_model = RecommenderModel()
    context = type("Context", (), {"artifacts": {"bundle": str(bundle_dir)}})()
    python_model.load_context(context)
    signature = infer_signature(example, python_model.predict(context, example))
    tags = lineage_tags(cfg)
    test = evaluation["test"]["selected"]
    valid = selection["candidates"][selection["selected"]]
    setup_mlflow(cfg)
    with mlflow.start_run(run_name=f"register-{cfg.source.name}", tags=tags | {"stage": "register"}) as run:
        mlflow.log_metrics(
            mlflow_metrics(
                {f"test_{k}": v for k, v in test.items()} | {f"valid_{k}": v for k, v in valid.items()}
            )
        )
        info = mlflow.pyfunc.log_model(
            name="recommender",
            python_model=python_model,
            artifacts={"bundle": str(bundle_dir)},
            code_paths=[str(REPO_ROOT / "models"), str(REPO_ROOT / "pipelines")],
            signature=signature,
            input_example=example,
            registered_model_name=cfg.registered_model,
            pip_requirements=[f"{p}=={package_version(p)}" for p in _REQUIREMENTS],
        )
    client = MlflowClient()
    version = str(info.registered_model_version)
    client.set_registered_model_alias(cfg.registered_model, CHALLENGER, version)
    version_tags = tags | {
        "selected": selection["selected"],
        "selection_reason": selection["reason"],
        "fusion_params": json.dumps(selection.get("fusions", {}).get(selection["selected"], {})),
        "test_metrics": json.dumps(test),
        "valid_metrics": json.dumps(valid),
        "approval.status": "pending",
        "train_run_id": str((load_report(cfg.paths.reports, "train") or {}).get("mlflow_run_id", "")),
    }
    for key, value in version_tags.items():
        client.set_model_version_tag(cfg.registered_model, version, key, value)
    log.info("registered %s version %s as %s", cfg.registered_model, version, CHALLENGER)
    result = RegisterResult(
        model_name=cfg.registered_model,
        version=version,
        model_uri=f"models:/{cfg.registered_model}/{version}",
        mlflow_run_id=run.info.run_id,
        selected=selection["selected"],
        test=test,
        valid=valid,
    )
    result.save(cfg.paths.reports, "register")
    return result
