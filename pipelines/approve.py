"""Approval: a reviewer (or the auto-approve switch) turns the challenger into the champion.

The MLflow registry aliases are the single source of truth; the decision (who, when, auto or not, comment,
metrics) is recorded as tags on the model version.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from fusionrec.config import RunConfig
from pipelines.register import CHALLENGER, CHAMPION, alias_version
from pipelines.stage import StageResult
from pipelines.tracking import setup_mlflow

log = logging.getLogger(__name__)


class ApprovalError(ValueError):
    pass


@dataclass
class ApprovalResult(StageResult):
    model_name: str
    version: str
    status: str  # "approved" or "rejected"
    by: str
    at: str
    auto: bool
    comment: str
    previous_champion: str | None
    metrics: dict[str, float]


def _resolve_version(cfg: RunConfig, version: str | None) -> str:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    if version is None:
        if (challenger := _current(cfg, CHALLENGER)) is None:
            raise ApprovalError(f"model {cfg.registered_model!r} has no {CHALLENGER} alias in the registry")
        return challenger
    try:
        return str(MlflowClient().get_model_version(cfg.registered_model, str(version)).version)
    except MlflowException as exc:
        raise ApprovalError(
            f"model {cfg.registered_model!r} has no version {version} in the registry"
        ) from exc


def _current(cfg: RunConfig, alias: str) -> str | None:
    mv = alias_version(cfg, alias)
    return None if mv is None else str(mv.version)


def decide(
    cfg: RunConfig, version: str | None, by: str, comment: str = "", auto: bool = False, approved: bool = True
) -> ApprovalResult:
    """Record a decision on ``version`` (default: the challenger); approving moves ``champion`` to it."""
    from mlflow import MlflowClient

    setup_mlflow(cfg)
    client = MlflowClient()
    version = _resolve_version(cfg, version)
    previous = _current(cfg, CHAMPION)
    metrics = json.loads(
        client.get_model_version(cfg.registered_model, version).tags.get("test_metrics", "{}")
    )
    status = "approved" if approved else "rejected"
    at = datetime.now(UTC).isoformat(timespec="seconds")
    for key, value in {
        "approval.status": status,
        "approval.by": by,
        "approval.at": at,
        "approval.auto": str(auto).lower(),
        "approval.comment": comment,
        "approval.metrics": json.dumps(metrics),
        "approval.previous_champion": previous or "",
    }.items():
        client.set_model_version_tag(cfg.registered_model, version, key, value)
    if approved:
        client.set_registered_model_alias(cfg.registered_model, CHAMPION, version)
        if _current(cfg, CHALLENGER) == version:
            client.delete_registered_model_alias(cfg.registered_model, CHALLENGER)
    log.info("%s %s version %s by %s%s", status, cfg.registered_model, version, by, " (auto)" if auto else "")
    result = ApprovalResult(cfg.registered_model, version, status, by, at, auto, comment, previous, metrics)
    result.save(cfg.paths.reports, "approve")
    return result


def approve(
    cfg: RunConfig, version: str | None, by: str, comment: str = "", auto: bool = False
) -> ApprovalResult:
    return decide(cfg, version, by, comment, auto, approved=True)


def reject(cfg: RunConfig, version: str | None, by: str, comment: str = "") -> ApprovalResult:
    return decide(cfg, version, by, comment, auto=False, approved=False)
