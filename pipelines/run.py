"""All stages after ingest, in order, in one process (the CLI's `run`; the DAG wires the same functions)."""

from __future__ import annotations

import logging
from typing import Any

from fusionrec.config import RunConfig

log = logging.getLogger(__name__)


def run_pipeline(cfg: RunConfig) -> dict[str, Any]:
    """validate -> version -> split -> features -> train -> fuse -> evaluate -> register -> (approve) -> promote.

    Without ``cfg.auto_approve`` the run stops after registering the challenger, awaiting a reviewer.
    """
    from pipelines.approve import approve
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
    if not cfg.auto_approve:
        log.info(
            "version %s awaits approval: fusionrec approve %s --by NAME",
            registered.version,
            registered.version,
        )
        return summary
    summary["approve"] = approve(
        cfg, registered.version, by="cli:auto", comment="auto-approve", auto=True
    ).to_dict()
    summary["promote"] = promote(cfg).to_dict()
    return summary
