"""Lineage of a registered model: model version -> MLflow runs -> DVC data hash -> GX result -> git commit.

Every link is read from what the pipeline already recorded (model version tags, MLflow run tags, the DVC
cache/remote, the GX result JSON, the git history); ``checkout`` asks DVC for the exact data a version was
trained on, by its hash, and checks the files it gets against that hash.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from fusionrec.config import RunConfig
from pipelines.schema import TABLES
from pipelines.stage import StageInputError, StageResult, load_report
from pipelines.tracking import REPO_ROOT

log = logging.getLogger(__name__)

VALIDATED, QUARANTINE = "validated", "quarantine"
# Run tags shown with a run (the lineage tags of pipelines/tracking.py besides the links followed here).
_RUN_TAGS = ("stage", "dataset", "protocol", "selected", "airflow_run_id")


class LineageError(StageInputError):
    """A lineage cannot be followed (unknown version, data gone from DVC); the message is one line."""


@dataclass
class ModelLink:
    name: str
    version: str
    aliases: list[str]
    created: str  # ISO time, UTC
    source: str  # MLflow logged-model URI
    selected: str  # the model or fusion the version serves
    approval: dict[str, str]  # approval.* tags without the prefix (status, by, at, auto, comment)
    test_metrics: dict[str, float]


@dataclass
class RunLink:
    run_id: str
    name: str
    experiment: str
    started: str  # ISO time, UTC
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]


@dataclass
class DataLink:
    md5: str  # DVC hash of the validated data folder ("<md5>.dir")
    quarantine_md5: str  # "" when not recorded for this version
    files: dict[str, str]  # relpath -> md5, from DVC's manifest of ``md5``
    dvc_repo: str  # the DVC repository whose cache/remote hold the data
    cache: str
    remote: str
    in_cache: bool
    in_remote: bool


@dataclass
class ValidationLink:
    gx_result: str  # GX validation result JSON
    found: bool
    run: str  # the validation run's label
    success: bool | None  # every suite passed on the accepted rows
    accepted: dict[str, int]  # table -> rows
    rejected: dict[str, int]
    data_docs: str


@dataclass
class CodeLink:
    commit: str
    dirty: bool  # tracked files had uncommitted changes when the run was logged
    in_repo: bool  # the commit is in this checkout's git history


@dataclass
class Lineage(StageResult):
    model: ModelLink
    registered_by: RunLink | None  # the MLflow run that logged the model version
    trained_by: RunLink | None  # the training run on the same data
    train_run_found_by: str  # "tag" (train_run_id on the version) or "search" (stage/data hash/time)
    data: DataLink
    validation: ValidationLink
    code: CodeLink
    warnings: list[str] = field(default_factory=list)


def lineage(cfg: RunConfig, version: str) -> Lineage:
    """Follow ``version`` (a number, ``v3``, or an alias such as ``champion`` / ``@champion``) back to its
    data, checks and code. Raises ``LineageError`` for a version or alias the registry does not have."""
    from mlflow import MlflowClient

    if cfg.mlflow_tracking_uri is None and not cfg.paths.mlflow_db.exists():  # the client would create one
        raise LineageError(f"no MLflow registry at {cfg.paths.mlflow_db}: run the pipeline first")
    client = MlflowClient(tracking_uri=cfg.tracking_uri, registry_uri=cfg.tracking_uri)
    mv = _model_version(cfg, client, version)
    run = _get_run(client, mv.run_id)
    tags = (run.data.tags if run else {}) | mv.tags  # the version carries the lineage tags as well
    warnings: list[str] = []
    registered_by = _run_link(client, run) if run else None
    if run is None:
        warnings.append(f"MLflow run {mv.run_id} that logged the version is gone")
    trained, found_by = _train_run(client, run, tags)
    if trained is None:
        warnings.append("no training run found for this version")
    elif trained.data.tags.get("dvc_data_hash") != tags.get("dvc_data_hash"):
        warnings.append(
            f"training run data hash {trained.data.tags.get('dvc_data_hash')} differs from the version's"
        )
    data = _data_link(cfg, tags.get("dvc_data_hash", ""), _quarantine_md5(cfg, tags))
    if not (data.in_cache or data.in_remote):
        warnings.append(f"DVC holds no copy of {data.md5 or 'unversioned data'} (cache or remote)")
    if data.md5 and not data.quarantine_md5:
        warnings.append("the quarantine's DVC hash was not recorded for this version")
    validation = _validation_link(cfg, tags.get("gx_result", ""))
    if not validation.found:
        warnings.append(f"GX result {validation.gx_result or '(not recorded)'} not found")
    code = _code_link(tags.get("git_commit", ""))
    if not code.in_repo:
        warnings.append(f"git commit {code.commit} is not in {REPO_ROOT}")
    return Lineage(
        model=ModelLink(
            name=mv.name,
            version=str(mv.version),
            aliases=sorted(mv.aliases or []),
            created=_iso(mv.creation_timestamp),
            source=str(mv.source),
            selected=tags.get("selected", ""),
            approval={
                k.removeprefix("approval."): v for k, v in mv.tags.items() if k.startswith("approval.")
            },
            test_metrics=json.loads(mv.tags.get("test_metrics", "{}")),
        ),
        registered_by=registered_by,
        trained_by=_run_link(client, trained) if trained else None,
        train_run_found_by=found_by,
        data=data,
        validation=validation,
        code=code,
        warnings=warnings,
    )


# ---------------------------------------------------------------- MLflow


def _model_version(cfg: RunConfig, client: Any, version: str) -> Any:
    """The registry's ModelVersion for a number (``3``, ``v3``) or an alias (``champion``, ``@champion``)."""
    from mlflow.exceptions import MlflowException

    ref = version.strip().removeprefix("@")
    number = re.fullmatch(r"v?(\d+)", ref)
    try:
        if number:
            return client.get_model_version(cfg.registered_model, number.group(1))
        return client.get_model_version_by_alias(cfg.registered_model, ref)
    except MlflowException:
        what = f"version {number.group(1)}" if number else f"alias {ref!r}"
        raise LineageError(f"model {cfg.registered_model!r} has no {what} in the registry") from None


def _get_run(client: Any, run_id: str | None) -> Any | None:
    from mlflow.exceptions import MlflowException

    if not run_id:
        return None
    try:
        return client.get_run(run_id)
    except MlflowException:
        return None


def _train_run(client: Any, register_run: Any | None, tags: dict[str, str]) -> tuple[Any | None, str]:
    """The training run behind the version: by its ``train_run_id`` tag, else the last ``stage=train`` run of
    the experiment on the same data (and Airflow run) that started before the register run."""
    if run := _get_run(client, tags.get("train_run_id")):
        return run, "tag"
    if register_run is None or not tags.get("dvc_data_hash"):
        return None, ""
    query = [
        "tags.stage = 'train'",
        f"tags.dvc_data_hash = '{tags['dvc_data_hash']}'",
        f"attributes.start_time <= {register_run.info.start_time}",
    ]
    if airflow_run := tags.get("airflow_run_id"):
        query.append(f"tags.airflow_run_id = '{airflow_run}'")
    runs = client.search_runs(
        [register_run.info.experiment_id],
        filter_string=" and ".join(query),
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return (runs[0], "search") if runs else (None, "")


def _run_link(client: Any, run: Any) -> RunLink:
    return RunLink(
        run_id=run.info.run_id,
        name=run.info.run_name or "",
        experiment=client.get_experiment(run.info.experiment_id).name,
        started=_iso(run.info.start_time),
        params=dict(run.data.params),
        metrics=dict(run.data.metrics),
        tags={k: run.data.tags[k] for k in _RUN_TAGS if k in run.data.tags},
    )


def _iso(millis: int | None) -> str:
    return datetime.fromtimestamp(millis / 1000, UTC).isoformat(timespec="seconds") if millis else ""


# ---------------------------------------------------------------- DVC


def _quarantine_md5(cfg: RunConfig, tags: dict[str, str]) -> str:
    """The quarantine hash of the version's data: its tag, else the latest version report if that versioned
    the same validated data."""
    if tags.get("dvc_quarantine_hash"):
        return tags["dvc_quarantine_hash"]
    report = load_report(cfg.paths.reports, "version") or {}
    return str(report.get("quarantine_md5", "")) if report.get("md5") == tags.get("dvc_data_hash") else ""


def _dvc_root(cfg: RunConfig) -> Path | None:
    """The home's own DVC repository, or (under ``dvc repro``) the repository the home lives in."""
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    if (cfg.paths.home / ".dvc").is_dir():
        return cfg.paths.home
    try:
        return Path(Repo.find_root(str(cfg.paths.home)))
    except NotDvcRepoError:
        return None


def _data_link(cfg: RunConfig, md5: str, quarantine_md5: str) -> DataLink:
    from dvc.config import RemoteConfigError
    from dvc.repo import Repo

    link = DataLink(md5, quarantine_md5, {}, "", "", "", False, False)
    root = _dvc_root(cfg)
    if root is None or not md5.endswith(".dir"):
        return link
    with Repo(str(root)) as repo:
        link.dvc_repo = str(root)
        link.cache = str(repo.cache.local_cache_dir)
        link.in_cache = repo.cache.local.exists(md5)
        remote = repo.config["core"].get("remote")
        try:
            remote_odb = repo.cloud.get_remote_odb(remote)
            link.remote = str(repo.config["remote"][remote]["url"])  # local paths come resolved
            link.in_remote = remote_odb.exists(md5)
        except RemoteConfigError:
            remote_odb = None
        odb = repo.cache.local if link.in_cache else remote_odb if link.in_remote else None
        if odb is not None:  # the folder's manifest: [{"md5", "relpath"}, ...]
            manifest = json.loads(odb.fs.cat_file(odb.oid_to_path(md5)))
            link.files = {entry["relpath"]: entry["md5"] for entry in manifest}
    return link


def dir_md5(folder: Path) -> str:
    """DVC's hash of a folder, computed from the bytes: md5 of the JSON list of {md5, relpath} sorted by path."""
    files = sorted((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.relative_to(folder).parts)
    entries = [
        {"md5": hashlib.md5(p.read_bytes()).hexdigest(), "relpath": p.relative_to(folder).as_posix()}
        for p in files
    ]
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode()).hexdigest() + ".dir"


def checkout(cfg: RunConfig, lineage: Lineage, out_dir: Path) -> Path:
    """Materialize the version's validated data (and quarantine, when its hash is known) in ``out_dir`` with
    ``dvc pull``; returns ``out_dir/validated``.

    ``out_dir`` becomes a small DVC workspace: ``validated.dvc`` / ``quarantine.dvc`` hold the hashes, its
    config points at the source repository's cache and remote (objects missing from the cache are fetched
    from the remote). The files are then hashed again and must give the recorded hash.
    """
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    data = lineage.data
    if not (data.in_cache or data.in_remote):
        raise LineageError(f"DVC has no copy of {data.md5 or 'the data'} in {data.cache or 'any cache'}")
    out_dir = Path(out_dir).resolve()
    _check_out_dir(out_dir)
    targets = {VALIDATED: data.md5} | ({QUARANTINE: data.quarantine_md5} if data.quarantine_md5 else {})
    _dvc_workspace(out_dir, data, targets)
    try:
        with Repo(str(out_dir)) as repo:
            stats = repo.pull(targets=[str(out_dir / f"{name}.dvc") for name in targets], force=True)
    except DvcException as exc:
        raise LineageError(f"dvc pull of {data.md5} into {out_dir} failed: {exc}") from exc
    for name, md5 in targets.items():
        if (got := dir_md5(out_dir / name)) != md5:
            raise LineageError(f"checked-out {out_dir / name} hashes to {got}, not {md5}")
    fetched = stats.get("stats", {}).get("fetched", 0)
    log.info("checked out %s to %s (%d objects fetched from the remote)", data.md5, out_dir, fetched)
    return out_dir / VALIDATED


def _dvc_workspace(out_dir: Path, data: DataLink, targets: dict[str, str]) -> None:
    """A DVC repository in ``out_dir`` using the source's cache and remote, with one .dvc file per target."""
    from dvc.repo import Repo

    if not (out_dir / ".dvc").is_dir():
        out_dir.mkdir(parents=True, exist_ok=True)
        Repo.init(str(out_dir), no_scm=True)
    for name, md5 in targets.items():
        record = {"outs": [{"md5": md5, "hash": "md5", "path": name}]}
        (out_dir / f"{name}.dvc").write_text(yaml.safe_dump(record, sort_keys=False))
    with Repo(str(out_dir)) as repo, repo.config.edit() as conf:
        conf["cache"]["dir"] = data.cache
        conf["core"]["autostage"] = False
        if data.remote:
            conf["remote"]["source"] = {"url": data.remote}
            conf["core"]["remote"] = "source"


def _check_out_dir(out_dir: Path) -> None:
    """``out_dir`` must be new, empty, or an earlier lineage checkout (whose data is then replaced)."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise LineageError(f"{out_dir} is a file: give a folder for the checkout")
    earlier = (out_dir / ".dvc").is_dir() and (out_dir / f"{VALIDATED}.dvc").exists()
    if earlier:
        for name in (VALIDATED, QUARANTINE):
            (out_dir / f"{name}.dvc").unlink(missing_ok=True)
            shutil.rmtree(out_dir / name, ignore_errors=True)
    elif any(out_dir.iterdir()):
        raise LineageError(f"{out_dir} is not empty: give a new folder for the checkout")


# ---------------------------------------------------------------- GX and git


def _validation_link(cfg: RunConfig, gx_result: str) -> ValidationLink:
    """The GX result JSON the version's data passed: its success flag and rows accepted/rejected per table
    (from the validate report when it is that run's, which also counts rows rejected at ingestion)."""
    path = Path(gx_result) if gx_result else None
    if path is None or not path.is_file():
        return ValidationLink(gx_result, False, "", None, {}, {}, "")
    record = json.loads(path.read_text())
    report = load_report(cfg.paths.reports, "validate") or {}
    if rows := record.get("rows"):  # written by validate since the streaming gate: exact, with ingest rejects
        accepted = {t: c["accepted"] for t, c in rows.items()}
        rejected = {t: c["rejected"] for t, c in rows.items()}
    elif report.get("gx_result") == str(path):
        accepted, rejected = report["accepted"], report["rejected"]
    else:
        incoming, accepted = _table_rows(record.get("incoming", {})), _table_rows(record.get("accepted", {}))
        rejected = {table: rows - accepted.get(table, 0) for table, rows in incoming.items()}
    return ValidationLink(
        gx_result=str(path),
        found=True,
        run=str(record.get("run", "")),
        success=record.get("success_on_accepted_rows"),
        accepted=accepted,
        rejected=rejected,
        data_docs=str(path.parent / "data_docs" / "index.html"),
    )


def _table_rows(results: dict[str, Any]) -> dict[str, int]:
    """Table -> rows its suite ran on, from a GX result written before validate recorded its row counts
    (one result per table then; newer results carry ``rows`` and never get here)."""
    return {name: _rows(run) for name, run in results.items() if name in TABLES}


def _rows(suite_result: dict[str, Any]) -> int:
    """Rows one suite run saw: the ``element_count`` of its row-level expectations."""
    counts = (r.get("result", {}).get("element_count") or 0 for r in suite_result.get("results", []))
    return max(counts, default=0)


def _code_link(tag: str) -> CodeLink:
    commit = tag.removesuffix("-dirty")
    return CodeLink(commit=commit or "unknown", dirty=tag.endswith("-dirty"), in_repo=_in_git(commit))


def _in_git(commit: str) -> bool:
    if not re.fullmatch(r"[0-9a-f]{7,40}", commit):
        return False
    try:
        probe = ["git", "cat-file", "-e", f"{commit}^{{commit}}"]
        return subprocess.run(probe, cwd=REPO_ROOT, capture_output=True).returncode == 0
    except OSError:  # no git on this machine
        return False
