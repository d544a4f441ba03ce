"""The stages after ingest on a small synthetic shop, in-process and all real (GX, DVC, Feast, MLflow,
serving store): register -> challenger, approve -> champion, promote, rollback, reject, status, lineage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fusionrec.config import RunConfig
from pipelines.approve import ApprovalError, approve, reject
from pipelines.promote import PromotionError, promote
from pipelines.register import register
from pipelines.run import run_pipeline
from pipelines.status import status
from serving.app import create_app
from serving.store import open_store

pytestmark = pytest.mark.slow


def synthetic_shop(home: Path, n_users: int = 120, n_items: int = 60, seed: int = 3) -> None:
    """Users prefer one of four item groups, so there is something real to learn."""
    rng = np.random.default_rng(seed)
    group = np.arange(n_items) % 4
    rows = []
    for u in range(n_users):
        taste = u % 4
        p = np.where(group == taste, 6.0, 1.0) / np.arange(1, n_items + 1) ** 0.3
        items = rng.choice(n_items, size=14, replace=False, p=p / p.sum())
        for j, i in enumerate(items):
            rows.append(
                (
                    f"u{u}",
                    f"i{i}",
                    float(rng.integers(1, 6)),
                    pd.Timestamp("2024-01-01", tz="UTC") + pd.Timedelta(hours=int(24 * j + u)),
                )
            )
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    inter["event_type"] = "rating"
    inter["session_id"] = None
    inter["source_row"] = np.arange(1, len(inter) + 1)
    items = pd.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(n_items)],
            "category": [f"g{g}" for g in group],
            "year": 2000 + group,
        }
    )
    canonical = home / "data" / "canonical"
    canonical.mkdir(parents=True)
    inter.to_parquet(canonical / "interactions.parquet", index=False)
    items.to_parquet(canonical / "items.parquet", index=False)


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> RunConfig:
    home = tmp_path_factory.mktemp("flow")
    synthetic_shop(home)
    config = RunConfig.from_env(
        home=home,
        models=("popularity", "ease"),
        n_trials=2,
        mlflow_tracking_uri=None,
        online_store="sqlite",
        serving_store="sqlite",
        pseudonymise=False,  # the canonical tables above are written by hand, not by ingest
    )
    summary = run_pipeline(config)  # auto_approve False: stops at the registered challenger
    assert "approve" not in summary and summary["register"]["version"] == "1"
    return config


def _version(cfg: RunConfig, version: str):  # -> ModelVersion
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=cfg.tracking_uri).get_model_version(cfg.registered_model, version)


def test_challenger_registered_with_metrics_and_lineage(cfg: RunConfig) -> None:
    st = status(cfg)
    assert st["champion"] is None and st["challenger"]["version"] == "1"
    tags = _version(cfg, "1").tags
    assert tags["approval.status"] == "pending"
    assert json.loads(tags["test_metrics"])["ndcg@10"] > 0
    assert tags["dvc_data_hash"].endswith(".dir") and tags["git_commit"] != ""


def test_every_trial_is_a_nested_mlflow_run_with_lineage_tags(cfg: RunConfig) -> None:
    import mlflow

    mlflow.set_tracking_uri(cfg.tracking_uri)
    runs = mlflow.search_runs(experiment_names=[cfg.experiment], output_format="pandas")
    trials = runs[runs["tags.trial"].notna()]
    assert len(trials) == 2 * 2  # two models x two trials
    model_runs = runs[runs["tags.stage"] == "train_model"]  # one per model, its trials nested in it
    assert sorted(model_runs["tags.model"]) == ["ease", "popularity"]
    assert set(trials["tags.mlflow.parentRunId"]) == set(model_runs["run_id"])
    train_runs = runs[runs["tags.stage"] == "train"]  # the stage's summary, the model runs nested in it
    assert len(train_runs) == 1 and set(model_runs["tags.mlflow.parentRunId"]) == set(train_runs["run_id"])
    assert len(runs) >= len(trials) + 6  # trials + 2 models + train, select, evaluate, register
    assert runs["tags.dvc_data_hash"].str.endswith(".dir").all()  # every run, trials included
    assert runs["tags.git_commit"].str.len().ge(7).all()


def test_promote_needs_an_approved_champion(cfg: RunConfig) -> None:
    assert status(cfg)["champion"] is None  # tests in this module run in file order on one home
    with pytest.raises(PromotionError, match="no champion"):
        promote(cfg)


def test_approve_promote_reject_rollback(cfg: RunConfig) -> None:
    result = approve(cfg, None, by="alice", comment="looks good")
    assert result.version == "1" and result.previous_champion is None
    tags = _version(cfg, "1").tags
    assert tags["approval.by"] == "alice" and tags["approval.auto"] == "false"
    assert json.loads(tags["approval.metrics"])["ndcg@10"] > 0
    st = status(cfg)
    assert st["champion"]["version"] == "1" and st["challenger"] is None

    first = promote(cfg)
    store = open_store(cfg)
    assert store.live_version() == first.serving_version and first.users == 120
    answer = store.recommend("u0", 10)
    assert len(answer.items) == 10 and not answer.cold_start
    # nothing a user already interacted with (in training or test data) is served again
    known = (
        pd.read_parquet(cfg.paths.validated / "interactions.parquet").groupby("user_id")["item_id"].agg(set)
    )
    for user, items in known.items():
        assert not {r.item_id for r in store.recommend(user, 10).items} & items, user
    assert store.recommend("stranger", 5).cold_start

    second_version = register(cfg).version
    assert second_version == "2"
    rejected = reject(cfg, second_version, by="bob", comment="not now")
    assert rejected.status == "rejected" and status(cfg)["champion"]["version"] == "1"
    approve(cfg, second_version, by="carol", auto=True)
    second = promote(cfg)
    assert second.previous_version == first.serving_version
    assert open_store(cfg).rollback() == first.serving_version
    assert status(cfg)["serving"]["live_version"] == first.serving_version


def test_unknown_version_is_a_clear_error(cfg: RunConfig) -> None:
    with pytest.raises(ApprovalError, match="no version 99"):
        approve(cfg, "99", by="alice")


def test_registered_pyfunc_loads_and_predicts_like_the_serving_store(
    cfg: RunConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow
    from click.testing import CliRunner
    from fastapi.testclient import TestClient

    from fusionrec.cli import cli
    from serving.app import create_app

    promote(cfg)  # the champion (approved above) is what serving answers with from here on
    mlflow.set_tracking_uri(cfg.tracking_uri)
    champion = status(cfg)["champion"]["version"]
    model = mlflow.pyfunc.load_model(f"models:/{cfg.registered_model}@champion")
    assert {c.name for c in model.metadata.get_input_schema().inputs} == {"user_id", "k"}
    frame = model.predict(pd.DataFrame({"user_id": ["u3", "nobody"], "k": [5, 3]}))
    assert list(frame[frame.user_id == "u3"]["rank"]) == [1, 2, 3, 4, 5]
    assert frame[frame.user_id == "nobody"]["cold_start"].all()

    live = open_store(cfg)
    assert live.meta()["model_version"] == champion
    served = [r.item_id for r in live.recommend("u3", 5).items]
    assert list(frame[frame.user_id == "u3"]["item_id"]) == served

    # the CLI and the HTTP API give the same answer (the CLI, like the fixture, keeps these raw ids)
    monkeypatch.setenv("FUSIONREC_PSEUDONYMISE", "false")
    http = TestClient(create_app(cfg)).get("/recommendations/u3", params={"k": 5}).json()
    result = CliRunner().invoke(cli, ["--home", str(cfg.home), "recommend", "u3", "--k", "5", "--json"])
    assert result.exit_code == 0, result.output
    cli_answer = json.loads(result.stdout)
    assert cli_answer.pop("request_id") != http.pop("request_id")  # each answer has its own
    assert cli_answer == http


def test_cli_reviewer_decisions(cfg: RunConfig) -> None:
    from click.testing import CliRunner

    from fusionrec.cli import cli

    version = register(cfg).version
    runner = CliRunner()
    base = ["--home", str(cfg.home)]
    rejected = runner.invoke(cli, [*base, "reject", version, "--by", "dana", "--comment", "worse", "--json"])
    assert rejected.exit_code == 0, rejected.output
    assert _version(cfg, version).tags["approval.status"] == "rejected"
    approved = runner.invoke(cli, [*base, "approve", "--by", "erin", "--json"])  # default: the challenger
    assert approved.exit_code == 0, approved.output
    assert json.loads(approved.stdout)["version"] == version
    assert status(cfg)["champion"]["approval"]["by"] == "erin"
    missing = runner.invoke(cli, [*base, "approve", "999", "--by", "erin"])
    assert missing.exit_code == 1 and "no version 999" in missing.output


def test_api_serves_user_features_from_the_feast_online_store(cfg: RunConfig) -> None:
    from fastapi.testclient import TestClient

    client = TestClient(create_app(cfg))
    known = client.get("/users/u0/features").json()
    train = pd.read_parquet(cfg.paths.splits / "train.parquet")
    assert known["known"] and known["features"]["n_interactions"] == int((train["user_id"] == "u0").sum())
    unknown = client.get("/users/stranger/features").json()
    assert not unknown["known"] and all(v is None for v in unknown["features"].values())


def test_features_endpoint_without_a_feature_store_degrades_with_the_reason(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from serving.app import create_app

    response = TestClient(create_app(RunConfig.from_env(home=tmp_path))).get("/users/u0/features")
    assert response.status_code == 200
    body = response.json()
    assert body["degraded"] and not body["known"] and "run the features stage" in body["detail"]
