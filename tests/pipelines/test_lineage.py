"""Lineage on a real pipeline run (ML-100k, popularity only): model version -> MLflow runs -> DVC hash -> GX
result -> git commit, and a DVC checkout of version 1's data after newer data (Instacart) has been versioned."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

import click
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from fusionrec.commands.lineage import lineage as lineage_command
from fusionrec.config import RunConfig
from pipelines.ingest import ingest
from pipelines.lineage import LineageError, _data_link, checkout, dir_md5, lineage
from pipelines.run import run_pipeline
from pipelines.stage import StageInputError, load_report
from pipelines.tracking import REPO_ROOT
from pipelines.validate import validate
from pipelines.version import version_data

pytestmark = pytest.mark.slow


@dataclass
class FirstRun:
    cfg: RunConfig
    interactions: pd.DataFrame  # validated interactions of the run version 1 was trained on
    md5: str  # data/validated.dvc right after that run
    quarantine_md5: str


def _dvc_md5(dvc_file: Path) -> str:
    return yaml.safe_load(dvc_file.read_text())["outs"][0]["md5"]


@pytest.fixture(scope="module")
def first(tmp_path_factory: pytest.TempPathFactory) -> FirstRun:
    cfg = RunConfig.from_env(
        home=tmp_path_factory.mktemp("lineage"),
        models=("popularity",),
        fusions=(),
        n_trials=1,
        mlflow_tracking_uri=None,
        online_store="sqlite",
        serving_store="sqlite",
    )
    ingest(cfg)
    assert run_pipeline(cfg)["register"]["version"] == "1"
    data = cfg.paths.data
    return FirstRun(
        cfg=cfg,
        interactions=pd.read_parquet(cfg.paths.validated / "interactions.parquet"),
        md5=_dvc_md5(data / "validated.dvc"),
        quarantine_md5=_dvc_md5(data / "quarantine.dvc"),
    )


@pytest.fixture(scope="module")
def second(first: FirstRun) -> str:
    """Newer data in the same home (Instacart), ingested, validated and versioned; returns its DVC hash."""
    cfg = RunConfig.from_env(home=first.cfg.home, source={"dataset": "instacart"})
    ingest(cfg)
    validate(cfg)
    return version_data(cfg).md5


def test_lineage_follows_the_version_to_its_run_data_checks_and_commit(first: FirstRun) -> None:
    cfg = first.cfg
    lin = lineage(cfg, "1")
    json.dumps(lin.to_dict())  # JSON-friendly all the way down

    assert (lin.model.name, lin.model.version, lin.model.aliases) == ("fusionrec", "1", ["challenger"])
    assert lin.model.selected == "popularity" and lin.model.approval == {"status": "pending"}
    assert lin.model.test_metrics["ndcg@10"] > 0
    assert lin.registered_by is not None and lin.trained_by is not None
    assert lin.registered_by.run_id == load_report(cfg.paths.reports, "register")["mlflow_run_id"]
    assert lin.registered_by.experiment == cfg.experiment and lin.registered_by.tags["dataset"] == "ml-100k"
    assert lin.trained_by.run_id == load_report(cfg.paths.reports, "train")["mlflow_run_id"]
    assert lin.trained_by.params["models"] == "popularity"

    assert lin.data.md5 == first.md5 and lin.data.quarantine_md5 == first.quarantine_md5
    assert set(lin.data.files) == {"interactions.parquet", "items.parquet", "users.parquet"}
    assert lin.data.in_cache and lin.data.in_remote and lin.data.dvc_repo == str(cfg.home)
    assert dir_md5(cfg.paths.validated) == first.md5  # our hash of the bytes is DVC's

    gx = lin.validation
    assert Path(gx.gx_result).is_file() and gx.success is True and Path(gx.data_docs).is_file()
    assert gx.accepted["interactions"] == len(first.interactions)
    assert (
        gx.rejected["interactions"] == load_report(cfg.paths.reports, "validate")["rejected"]["interactions"]
    )

    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert lin.code.commit == head and lin.code.in_repo
    assert lin.warnings == []


def test_numbers_and_aliases_name_the_same_version(first: FirstRun) -> None:
    for ref in ("challenger", "@challenger", "v1", " 1 "):
        assert lineage(first.cfg, ref).model.version == "1", ref


def test_unknown_version_or_alias_is_a_one_line_error(first: FirstRun) -> None:
    with pytest.raises(LineageError, match=r"^model 'fusionrec' has no version 99 in the registry$"):
        lineage(first.cfg, "99")
    with pytest.raises(StageInputError, match="no alias 'champion'"):  # not approved yet
        lineage(first.cfg, "champion")


def test_no_registry_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LineageError, match="no MLflow registry"):
        lineage(RunConfig.from_env(home=tmp_path, mlflow_tracking_uri=None), "1")


def test_checkout_materializes_the_exact_validated_and_quarantine_data(
    first: FirstRun, tmp_path: Path
) -> None:
    lin = lineage(first.cfg, "1")
    out = checkout(first.cfg, lin, tmp_path / "v1")
    assert out == tmp_path / "v1" / "validated" and dir_md5(out) == first.md5
    pd.testing.assert_frame_equal(pd.read_parquet(out / "interactions.parquet"), first.interactions)
    assert dir_md5(tmp_path / "v1" / "quarantine") == first.quarantine_md5
    assert _dvc_md5(tmp_path / "v1" / "validated.dvc") == first.md5  # a DVC workspace: `dvc status` works
    checkout(first.cfg, lin, tmp_path / "v1")  # an earlier checkout folder is refreshed in place

    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(LineageError, match="not empty"):
        checkout(first.cfg, lin, tmp_path / "busy")


def test_checkout_brings_back_version_1_data_after_newer_data(
    first: FirstRun, second: str, tmp_path: Path
) -> None:
    cfg = first.cfg
    assert second != first.md5 and _dvc_md5(cfg.paths.data / "validated.dvc") == second
    assert len(pd.read_parquet(cfg.paths.validated / "interactions.parquet")) != len(first.interactions)

    lin = lineage(cfg, "1")
    assert lin.data.md5 == first.md5  # the version's hash, not the workspace's
    # counted from the GX result JSON now that the validate report is the newer run's
    assert lin.validation.accepted["interactions"] == len(first.interactions) and lin.validation.success
    out = checkout(cfg, lin, tmp_path / "v1")
    assert dir_md5(out) == first.md5
    pd.testing.assert_frame_equal(pd.read_parquet(out / "interactions.parquet"), first.interactions)
    # The quarantine hash of an older version is known only from its dvc_quarantine_hash tag.
    assert lin.data.quarantine_md5 in ("", first.quarantine_md5)
    assert (tmp_path / "v1" / "quarantine").exists() == bool(lin.data.quarantine_md5)

    # Without the home's cache (as after `dvc gc`) the data comes from the DVC remote.
    shutil.rmtree(Path(lin.data.cache))
    from_remote = lineage(cfg, "1")
    assert not from_remote.data.in_cache and from_remote.data.in_remote
    out = checkout(cfg, from_remote, tmp_path / "from-remote")
    pd.testing.assert_frame_equal(pd.read_parquet(out / "interactions.parquet"), first.interactions)


def test_data_of_a_dvc_repro_run_is_found_in_the_enclosing_repository(
    first: FirstRun, tmp_path: Path
) -> None:
    """Under `dvc repro` the home (dvc-run/) has no DVC repo of its own: its outputs are in the project's."""
    from dvc.repo import Repo

    project = tmp_path / "project"
    validated = project / "dvc-run" / "data" / "validated"
    validated.mkdir(parents=True)
    first.interactions.head(50).to_parquet(validated / "interactions.parquet", index=False)
    Repo.init(str(project), no_scm=True)
    with Repo(str(project)) as repo:
        repo.add([str(validated)])
    md5 = _dvc_md5(validated.with_suffix(".dvc"))
    cfg = RunConfig.from_env(home=project / "dvc-run")

    link = _data_link(cfg, md5, "")
    assert link.dvc_repo == str(project) and link.in_cache and not link.in_remote
    assert set(link.files) == {"interactions.parquet"} and dir_md5(validated) == md5
    out = checkout(cfg, replace(lineage(first.cfg, "1"), data=link), tmp_path / "co")
    pd.testing.assert_frame_equal(pd.read_parquet(out / "interactions.parquet"), first.interactions.head(50))


@click.group()
@click.option("--home", required=True)
@click.pass_context
def _group(ctx: click.Context, home: str) -> None:
    ctx.obj = {"home": home, "globals": {}}


_group.add_command(lineage_command)


def test_cli_prints_the_chain_as_text_and_json(first: FirstRun, tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["--home", str(first.cfg.home), "lineage"]
    lin = lineage(first.cfg, "1")

    text = runner.invoke(_group, [*base, "challenger"])
    assert text.exit_code == 0, text.output
    for expected in (
        "model       fusionrec v1",
        "▼",
        lin.registered_by.run_id,
        lin.data.md5,
        lin.code.commit,
    ):
        assert expected in text.stdout, expected
    assert text.stdout.index("mlflow run") < text.stdout.index("dvc data") < text.stdout.index("git commit")

    as_json = runner.invoke(_group, [*base, "1", "--json", "--checkout", str(tmp_path / "data")])
    assert as_json.exit_code == 0, as_json.output
    payload = json.loads(as_json.stdout)
    assert payload["registered_by"]["run_id"] == lin.registered_by.run_id
    assert payload["data"]["md5"] == lin.data.md5 == dir_md5(Path(payload["checkout"]))

    missing = runner.invoke(_group, [*base, "99"])
    assert missing.exit_code == 1 and "error: model 'fusionrec' has no version 99" in missing.output
    assert "MODEL_VERSION" in runner.invoke(_group, [*base, "--help"]).stdout
