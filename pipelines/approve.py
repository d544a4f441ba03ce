"""Approval: a reviewer (or the auto-approve switch) turns the challenger into the champion.

The MLflow registry aliases are the single source of truth; the decision (who, when, auto or not, comment,
metrics, the comparison with the champion) is recorded as tags on the model version. A challenger worse than
the champion on the same holdout (``pipelines/compare.py``, beyond ``RunConfig.approval_tolerance``) is
refused unless the approval is forced; the refusal is recorded too. Rejections are never refused.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fusionrec.config import RunConfig
from pipelines.compare import COMPARISON_TAG, NO_CHAMPION, WORSE, judge
from pipelines.register import CHALLENGER, CHAMPION, alias_version
from pipelines.stage import StageInputError, StageResult
from pipelines.tracking import setup_mlflow

log = logging.getLogger(__name__)


class ApprovalError(ValueError):
    pass


class ApprovalRefused(ApprovalError):
    """Approving would replace the champion with a worse model; the refusal is recorded on the version."""

    def __init__(self, message: str, version: str, comparison: dict[str, Any]) -> None:
        super().__init__(message)
        self.version = version
        self.comparison = comparison


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
    forced: bool = False  # approved although the comparison said "worse"
    comparison: dict[str, Any] | None = None  # against the champion (approvals only)


def _resolve_version(cfg: RunConfig, version: str | None) -> str:
    from pipelines.promote import registered_version

    if version is None:
        if (challenger := _current(cfg, CHALLENGER)) is None:
            raise ApprovalError(f"model {cfg.registered_model!r} has no {CHALLENGER} alias in the registry")
        return challenger
    if (found := registered_version(cfg, str(version))) is None:
        raise ApprovalError(f"model {cfg.registered_model!r} has no version {version} in the registry")
    return found


def _current(cfg: RunConfig, alias: str) -> str | None:
    mv = alias_version(cfg, alias)
    return None if mv is None else str(mv.version)


def comparison_for(cfg: RunConfig, version: str, tags: dict[str, str]) -> dict[str, Any]:
    """The version's comparison with the current champion: the stored ``comparison`` tag when it was made
    against this champion, else a fresh one; the verdict is re-judged with this run's tolerance."""
    from pipelines.compare import compare

    champion = _current(cfg, CHAMPION)
    stored = json.loads(tags.get(COMPARISON_TAG) or "null")
    if champion is None:
        stored = stored or {"challenger_version": version, "champion_version": None}
        return stored | {
            "champion_version": None,
            "champion": None,
            "difference": None,
            "verdict": NO_CHAMPION,
        }
    if not stored or stored.get("champion_version") != champion:
        try:
            stored = compare(cfg, version).to_dict()
        except StageInputError as exc:
            raise ApprovalError(f"cannot compare v{version} with champion v{champion}: {exc}") from exc
    metric = stored["metric"]
    verdict = judge(stored["challenger"][metric], stored["champion"][metric], cfg.approval_tolerance)
    return stored | {"tolerance": cfg.approval_tolerance, "verdict": verdict}


def refusal_reason(version: str, comparison: dict[str, Any]) -> str:
    """One line: why approving ``version`` is refused, with both values of the metric and the tolerance."""
    metric = comparison["metric"]
    ours, theirs = comparison["challenger"][metric], comparison["champion"][metric]
    return (
        f"v{version} is worse than champion v{comparison['champion_version']} on the same holdout: "
        f"{metric} {ours:.4f} vs {theirs:.4f} (difference {ours - theirs:+.4f}, tolerance "
        f"{comparison['tolerance']:g}); use --force to approve anyway"
    )


def decide(
    cfg: RunConfig,
    version: str | None,
    by: str,
    comment: str = "",
    auto: bool = False,
    approved: bool = True,
    force: bool = False,
) -> ApprovalResult:
    """Record a decision on ``version`` (default: the challenger); approving moves ``champion`` to it.

    Approving a version worse than the champion (comparison verdict "worse") records the refusal and raises
    ``ApprovalRefused`` unless ``force``; a forced approval is tagged ``approval.forced=true``."""
    from mlflow import MlflowClient

    setup_mlflow(cfg)
    client = MlflowClient()
    version = _resolve_version(cfg, version)
    previous = _current(cfg, CHAMPION)
    tags = client.get_model_version(cfg.registered_model, version).tags
    metrics = json.loads(tags.get("test_metrics", "{}"))
    comparison = comparison_for(cfg, version, tags) if approved else None
    worse = comparison is not None and comparison["verdict"] == WORSE
    refusal = refusal_reason(version, comparison) if comparison is not None and worse and not force else None
    status = "refused" if refusal else "approved" if approved else "rejected"
    at = datetime.now(UTC).isoformat(timespec="seconds")
    record = {
        "approval.status": status,
        "approval.by": by,
        "approval.at": at,
        "approval.auto": str(auto).lower(),
        "approval.comment": comment,
        "approval.metrics": json.dumps(metrics),
        "approval.previous_champion": previous or "",
    }
    if comparison is not None:
        record["approval.forced"] = str(worse and force).lower()
        record["approval.comparison"] = json.dumps(comparison)
    if refusal:
        record["approval.refused_reason"] = refusal
    elif "approval.refused_reason" in tags:  # an earlier refusal no longer describes the version
        client.delete_model_version_tag(cfg.registered_model, version, "approval.refused_reason")
    for key, value in record.items():
        client.set_model_version_tag(cfg.registered_model, version, key, value)
    if refusal:
        log.warning("%s version %s not approved (by %s): %s", cfg.registered_model, version, by, refusal)
        raise ApprovalRefused(refusal, version, comparison or {})
    if approved:
        client.set_registered_model_alias(cfg.registered_model, CHAMPION, version)
        if _current(cfg, CHALLENGER) == version:
            client.delete_registered_model_alias(cfg.registered_model, CHALLENGER)
    log.info(
        "%s %s version %s by %s%s%s",
        status,
        cfg.registered_model,
        version,
        by,
        " (auto)" if auto else "",
        " (forced past a worse comparison)" if worse else "",
    )
    result = ApprovalResult(
        cfg.registered_model, version, status, by, at, auto, comment, previous, metrics, worse, comparison
    )
    result.save(cfg.paths.reports, "approve")
    return result


def approve(
    cfg: RunConfig, version: str | None, by: str, comment: str = "", auto: bool = False, force: bool = False
) -> ApprovalResult:
    return decide(cfg, version, by, comment, auto, approved=True, force=force)


def reject(cfg: RunConfig, version: str | None, by: str, comment: str = "") -> ApprovalResult:
    return decide(cfg, version, by, comment, auto=False, approved=False)
