"""All stages after ingest, in order, in one process (the CLI's `run`; the DAG wires the same functions)."""

from __future__ import annotations

import logging
from typing import Any

from fusionrec.config import RunConfig

log = logging.getLogger(__name__)


def run_pipeline(cfg: RunConfig, force: bool = False) -> dict[str, Any]:
    """validate -> version -> split -> features -> train -> fuse -> evaluate -> register -> compare
    -> (approve) -> promote.

    Without ``cfg.auto_approve`` the run stops after comparing the challenger with the champion, awaiting a
    reviewer. An auto-approval of a challenger worse than the champion is refused (recorded, nothing is
    promoted) unless ``force``.
    """
    from pipelines.approve import ApprovalRefused, approve
    from pipelines.compare import compare
    from pipelines.evaluate import evaluate
    from pipelines.features import build_features
    from pipelines.fuse import fuse_and_select
    from pipelines.promote import promote
    from pipelines.register import register
    from pipelines.split import split
    from pipelines.train import train
    from pipelines.validate import validate
    from pipelines.version import version_data

    summary: dict[str, Any] = {}
    for name, stage in (
        ("validate", validate),
        ("version", version_data),
        ("split", split),
        ("features", build_features),
        ("train", train),
        ("fuse", fuse_and_select),
        ("evaluate", evaluate),
    ):
        log.info("stage %s", name)
        summary[name] = stage(cfg).to_dict()
    registered = register(cfg)
    summary["register"] = registered.to_dict()
    summary["compare"] = compare(cfg, registered.version).to_dict()
    if not cfg.auto_approve:
        log.info(
            "version %s awaits approval: fusionrec approve %s --by NAME",
            registered.version,
            registered.version,
        )
        return summary
    try:
        summary["approve"] = approve(
            cfg, registered.version, by="cli:auto", comment="auto-approve", auto=True, force=force
        ).to_dict()
    except ApprovalRefused as refused:
        summary["approve"] = {"status": "refused", "version": refused.version, "reason": str(refused)}
        return summary
    summary["promote"] = promote(cfg).to_dict()
    return summary
