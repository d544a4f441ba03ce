"""Version stage: the validated dataset (and its quarantine) go into DVC, pushed to the run's DVC remote.

The FusionRec home is its own DVC repository (``dvc init --no-scm``) so every run — from the DAG, the CLI or a
test — versions its data the same way; the returned md5 is the DVC hash tagged on every MLflow run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import yaml

from fusionrec.config import RunConfig
from pipelines.stage import StageResult

log = logging.getLogger(__name__)


@dataclass
class VersionResult(StageResult):
    md5: str  # DVC hash of the validated data folder
    quarantine_md5: str
    dvc_file: str
    remote: str
    pushed: int  # files pushed to the remote this time


def _dvc_repo(cfg: RunConfig):  # -> dvc.repo.Repo
    from dvc.repo import Repo

    home = cfg.paths.home
    if not (home / ".dvc").exists():
        Repo.init(str(home), no_scm=True)
    repo = Repo(str(home))
    remote = str(cfg.paths.dvc_remote)
    with repo.config.edit() as conf:
        conf["remote"]["local"] = {"url": remote}
        conf["core"]["remote"] = "local"
        conf["core"]["autostage"] = False
    return repo


def _md5(dvc_file: Path) -> str:
    return str(yaml.safe_load(dvc_file.read_text())["outs"][0]["md5"])


def version_data(cfg: RunConfig) -> VersionResult:
    """``dvc add`` the validated and quarantine folders, ``dvc push`` them; return their hashes."""
    repo = _dvc_repo(cfg)
    targets = [cfg.paths.validated, cfg.paths.quarantine]
    existing = [str(t) for t in targets if t.exists()]
    with repo:
        repo.add(existing)
        pushed = repo.push()
    validated_file = cfg.paths.validated.with_suffix(".dvc")
    quarantine_file = cfg.paths.quarantine.with_suffix(".dvc")
    result = VersionResult(
        md5=_md5(validated_file),
        quarantine_md5=_md5(quarantine_file) if quarantine_file.exists() else "",
        dvc_file=str(validated_file),
        remote=str(cfg.paths.dvc_remote),
        pushed=int(pushed),
    )
    log.info(
        "versioned %s as %s (pushed %d files to %s)", cfg.paths.validated, result.md5, pushed, result.remote
    )
    result.save(cfg.paths.reports, "version")
    return result
