"""Approval against the champion: compare on the same holdout, refuse a worse challenger unless forced.

A real MLflow SQLite registry in a temporary home; the registered versions are tiny EASE (good) and popularity
(poor) models fitted on hand-made splits where users prefer one of four item groups. The tests of the module
run in file order on one registry (marked slow: creating the registry's database alone takes ~20 s).
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from fusionrec.config import RunConfig
from models.base import Recommender
from models.registry import get_model_class
from pipelines import evaluate
from pipelines.approve import ApprovalRefused, approve, reject
from pipelines.bundle import Bundle
from pipelines.compare import RegisteredOnHoldout, compare, judge
from pipelines.register import CHALLENGER, CHAMPION, alias_version, register
from pipelines.splitdata import load_split_data


def write_splits(home: Path, n_users: int = 80, n_items: int = 40, seed: int = 5, prefix: str = "") -> None:
    """fit/valid/train/test by time per user: each user's last 3 events are test, the 2 before are valid."""
    rng = np.random.default_rng(seed)
    group = np.arange(n_items) % 4
    rows = []
    for u in range(n_users):
        p = np.where(group == u % 4, 8.0, 1.0)
        for j, i in enumerate(rng.choice(n_items, size=12, replace=False, p=p / p.sum())):
            rows.append(
                (
                    f"{prefix}u{u}",
                    f"{prefix}i{i}",
                    pd.Timestamp("2024-01-01", tz="UTC") + pd.Timedelta(days=j),
                )
            )
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    position = frame.groupby("user_id").cumcount()
    train, test = frame[position < 9], frame[position >= 9]
    fit, valid = frame[position < 7], frame[(position >= 7) & (position < 9)]
    splits = home / "data" / "splits"
    splits.mkdir(parents=True, exist_ok=True)
    for name, part in {"fit": fit, "valid": valid, "train": train, "test": test}.items():
        part.to_parquet(splits / f"{name}.parquet", index=False)


def register_model(cfg: RunConfig, name: str) -> str:
    """Fit ``name`` on the train split, save it as the selected bundle with the reports register reads,
    and register it (the new challenger); returns the version."""
    data = load_split_data(cfg, with_features=False)
    model = get_model_class(name)().fit(data.train)
    selected = cfg.paths.artifacts / "selected"
    shutil.rmtree(selected, ignore_errors=True)
    Bundle.from_training(model, data.train, repeats=False, seen=data.seen).save(selected)
    metrics = independent_metrics(cfg, model)
    cfg.paths.reports.mkdir(parents=True, exist_ok=True)
    select = {"selected": name, "reason": "test", "candidates": {name: metrics}}
    (cfg.paths.reports / "select.json").write_text(json.dumps(select))
    (cfg.paths.reports / "evaluate.json").write_text(json.dumps({"test": {"selected": metrics}}))
    return register(cfg).version


def independent_metrics(cfg: RunConfig, model: Recommender) -> dict[str, float]:
    """The evaluate stage's numbers for an in-memory model on the current test split."""
    data = load_split_data(cfg, with_features=False)
    popularity = np.asarray((data.train.matrix > 0).sum(axis=0)).ravel()
    return evaluate.test_metrics(model, data.test, data, popularity, cfg.k)[0]


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> RunConfig:
    home = tmp_path_factory.mktemp("approve")
    write_splits(home)
    return RunConfig.from_env(home=home, mlflow_tracking_uri=None, pseudonymise=False)


def _tags(cfg: RunConfig, version: str) -> dict[str, str]:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=cfg.tracking_uri).get_model_version(cfg.registered_model, version).tags


def _alias(cfg: RunConfig, alias: str) -> str | None:
    mv = alias_version(cfg, alias)
    return None if mv is None else str(mv.version)


def test_verdicts() -> None:
    assert judge(0.30, None, 0.01) == "no_champion"
    assert judge(0.31, 0.30, 0.01) == "better"
    assert judge(0.30, 0.30, 0.01) == "within_tolerance"
    assert judge(0.29, 0.30, 0.01) == "within_tolerance"
    assert judge(0.2899, 0.30, 0.01) == "worse"


def test_bundle_is_scored_through_the_holdout_index() -> None:
    """Known users get the bundle's scores, unknown users its popularity; unknown items are never ranked."""
    from models.popularity import Popularity

    model = Popularity()
    model.item_scores_ = np.array([3.0, 2.0, 1.0], dtype=np.float32)
    bundle = Bundle(
        model=model,
        user_ids=np.array(["a", "b"], dtype=object),
        item_ids=np.array(["x", "y", "z"], dtype=object),
        seen=sp.csr_matrix((2, 3)),
        popularity=np.array([1.0, 5.0, 9.0]),
        repeats=False,
    )
    view = RegisteredOnHoldout(bundle, np.array(["b", "new"], dtype=object), np.array(["z", "w", "x"]))
    assert view.score(np.array([0, 1])).tolist() == [[1.0, -np.inf, 3.0], [9.0, -np.inf, 1.0]]
    assert view.cold_users(np.array([0, 1])) == 1
    items, _ = view.recommend(np.array([0, 1]), k=3)
    assert items.tolist() == [
        [2, 0, -1],
        [0, 2, -1],
    ]  # "w" is unknown to the bundle: an empty slot, not a pick


@pytest.mark.slow
def test_first_approval_has_no_champion(cfg: RunConfig) -> None:
    version = register_model(cfg, "ease")
    result = compare(cfg)
    assert (result.challenger_version, result.verdict, result.champion) == (version, "no_champion", None)
    approved = approve(cfg, None, by="alice", comment="first")
    assert approved.status == "approved" and not approved.forced
    assert approved.comparison and approved.comparison["verdict"] == "no_champion"
    assert _alias(cfg, CHAMPION) == version and _alias(cfg, CHALLENGER) is None
    assert _tags(cfg, version)["approval.forced"] == "false"


@pytest.mark.slow
def test_comparison_is_challenger_minus_champion_on_the_same_split(cfg: RunConfig) -> None:
    version = register_model(cfg, "popularity")
    result = compare(cfg)
    assert (result.challenger_version, result.champion_version) == (version, "1")
    data = load_split_data(cfg, with_features=False)
    ease = independent_metrics(cfg, get_model_class("ease")().fit(data.train))
    popularity = independent_metrics(cfg, get_model_class("popularity")().fit(data.train))
    assert result.challenger == pytest.approx(popularity, rel=1e-12)
    assert result.champion == pytest.approx(ease, rel=1e-12)
    assert result.difference == pytest.approx({m: popularity[m] - ease[m] for m in ease}, rel=1e-9, abs=1e-12)
    # the registered challenger scores what the evaluate stage reported for it
    assert result.challenger == pytest.approx(json.loads(_tags(cfg, version)["test_metrics"]), rel=1e-12)
    assert result.metric == "ndcg@10" and ease["ndcg@10"] > popularity["ndcg@10"] + 0.05
    assert (result.verdict, result.test_users, result.champion_cold_users) == ("worse", 80, 0)
    stored = json.loads(_tags(cfg, version)["comparison"])
    assert stored == json.loads(json.dumps(result.to_dict()))
    assert json.loads((cfg.paths.reports / "compare.json").read_text())["verdict"] == "worse"


@pytest.mark.slow
def test_worse_challenger_is_refused_and_the_refusal_recorded(cfg: RunConfig) -> None:
    with pytest.raises(ApprovalRefused) as refused:
        approve(cfg, "2", by="bob", comment="ship it")
    message = str(refused.value)
    assert "\n" not in message and "use --force" in message and "tolerance 0.01" in message
    values = json.loads(_tags(cfg, "2")["comparison"])
    for value in (values["challenger"]["ndcg@10"], values["champion"]["ndcg@10"]):
        assert f"{value:.4f}" in message
    assert _alias(cfg, CHAMPION) == "1" and _alias(cfg, CHALLENGER) == "2"
    tags = _tags(cfg, "2")
    assert tags["approval.status"] == "refused" and tags["approval.refused_reason"] == message
    assert tags["approval.by"] == "bob"


@pytest.mark.slow
def test_cli_refusal_is_one_line_and_exit_code_1(cfg: RunConfig) -> None:
    from click.testing import CliRunner

    from fusionrec.commands.approval import approve as approve_command

    obj = {"home": str(cfg.home), "globals": {}}
    result = CliRunner().invoke(approve_command, ["2", "--by", "carl"], obj=obj)
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and re.search(r"ndcg@10 0\.\d{4} vs 0\.\d{4} .*use --force", errors[0])
    assert result.stdout == "" and _alias(cfg, CHAMPION) == "1"
    # a larger tolerance on the command line lets the same version through
    loose = CliRunner().invoke(approve_command, ["v2", "--by", "carl", "--tolerance", "1", "--json"], obj=obj)
    assert loose.exit_code == 0, loose.output
    assert json.loads(loose.stdout)["comparison"]["verdict"] == "within_tolerance"
    assert _alias(cfg, CHAMPION) == "2"
    approve(cfg, "1", by="carl", comment="back to EASE")  # the champion again, for the tests below


@pytest.mark.slow
def test_forced_approval_moves_champion_and_is_recorded(cfg: RunConfig) -> None:
    version = register_model(cfg, "popularity")  # compared with champion v1 (EASE)
    assert compare(cfg).verdict == "worse"
    with pytest.raises(ApprovalRefused):
        approve(cfg, version, by="dana")
    forced = approve(cfg, version, by="dana", comment="need it live", force=True)
    assert forced.status == "approved" and forced.forced and forced.previous_champion == "1"
    assert _alias(cfg, CHAMPION) == version
    tags = _tags(cfg, version)
    assert tags["approval.status"] == "approved" and tags["approval.forced"] == "true"
    assert json.loads(tags["approval.comparison"])["verdict"] == "worse"
    assert "approval.refused_reason" not in tags  # the earlier refusal no longer describes it


@pytest.mark.slow
def test_better_challenger_and_stale_comparison(cfg: RunConfig) -> None:
    version = register_model(cfg, "ease")
    stale = compare(cfg)  # against the popularity champion: better
    assert stale.verdict == "better" and stale.champion_version == _alias(cfg, CHAMPION)
    approve(cfg, "1", by="erin", comment="EASE back")  # the champion moves: the stored comparison is stale
    approved = approve(
        cfg, version, by="erin"
    )  # compared again, against v1: the same model, within tolerance
    assert approved.comparison and approved.comparison["champion_version"] == "1"
    assert approved.comparison["verdict"] == "within_tolerance"
    assert approved.comparison["difference"]["ndcg@10"] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.slow
def test_within_tolerance_is_allowed(cfg: RunConfig) -> None:
    version = register_model(cfg, "popularity")
    lenient = dataclasses.replace(cfg, approval_tolerance=1.0)
    assert compare(lenient).verdict == "within_tolerance"
    assert approve(lenient, version, by="fay").comparison["verdict"] == "within_tolerance"  # type: ignore[index]
    assert _alias(cfg, CHAMPION) == version and _tags(cfg, version)["approval.forced"] == "false"


@pytest.mark.slow
def test_rejection_is_never_refused(cfg: RunConfig) -> None:
    approve(cfg, "1", by="gus", comment="EASE once more")
    version = register_model(cfg, "popularity")
    rejected = reject(cfg, version, by="gus", comment="worse")
    assert rejected.status == "rejected" and rejected.comparison is None
    tags = _tags(cfg, version)
    assert (tags["approval.status"], tags["approval.by"], tags["approval.comment"]) == (
        "rejected",
        "gus",
        "worse",
    )
    assert _alias(cfg, CHAMPION) == "1"


@pytest.mark.slow
def test_champion_on_new_users_and_items_is_scored_not_crashed(cfg: RunConfig) -> None:
    """The next run's data has users and items the champion never saw: they get its popularity fallback, and
    it cannot recommend the new items."""
    write_splits(cfg.home, n_users=60, n_items=40, seed=9, prefix="new-")
    version = register_model(cfg, "ease")
    result = compare(cfg)
    assert result.champion_version == "1" and result.champion_cold_users == result.test_users == 60
    assert result.champion is not None and result.champion["ndcg@10"] == 0.0  # knows none of the new items
    assert result.verdict == "better" and result.challenger_version == version
