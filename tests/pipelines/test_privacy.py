"""Privacy: raw user ids, personal data and the pseudonymisation key never reach data, features, models,
MLflow, the serving store or the logs — checked by scanning every byte a real pipeline run writes."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pandas as pd
import pytest

from fusionrec.config import RunConfig
from pipelines import privacy
from pipelines.generate import GenerateConfig, generate
from pipelines.ingest import ingest, shop_source
from pipelines.run import run_pipeline

KEY = "test-key-0123456789abcdef"


def test_personal_columns_are_recognised_by_name() -> None:
    columns = [
        "user_id",
        "E-Mail",
        "phone_number",
        "Full Name",
        "zip_code",
        "region",
        "address",
        "age",
        "brand",
    ]
    assert privacy.personal_columns(columns) == ["E-Mail", "phone_number", "Full Name", "zip_code", "address"]


def test_pseudonyms_are_keyed_stable_and_null_safe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(privacy.KEY_ENV, KEY)
    ids = pd.Series(["u1", None, "u2", "u1"], dtype=object)
    hashed = privacy.pseudonymise(ids)
    assert hashed[0] == hashed[3] == privacy.pseudonymise_one("u1") and hashed[1] is None
    assert len(hashed[0]) == privacy.PSEUDONYM_CHARS and hashed[0] != hashed[2]
    monkeypatch.setenv(privacy.KEY_ENV, KEY + "-other")
    assert privacy.pseudonymise_one("u1") != hashed[0]  # another key, other pseudonyms
    monkeypatch.setenv(privacy.KEY_ENV, "short")
    with pytest.raises(privacy.PrivacyError, match="too short"):
        privacy.pseudonym_key()


def test_without_the_variable_a_private_key_file_outside_the_home_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(privacy.KEY_ENV, raising=False)
    monkeypatch.setenv(privacy.KEY_FILE_ENV, str(tmp_path / "config" / "key"))
    first = privacy.pseudonymise_one("u1")
    assert (tmp_path / "config" / "key").stat().st_mode & 0o777 == 0o600
    assert privacy.pseudonymise_one("u1") == first  # same machine, same pseudonyms


@pytest.mark.slow
def test_nothing_personal_reaches_any_output_or_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(privacy.KEY_ENV, KEY)
    shop = tmp_path / "shop"
    generate(GenerateConfig(users=150, items=80, events=6000, seed=5, out=shop, with_pii=True))
    users = pd.read_parquet(shop / "users.parquet")
    secrets = {KEY, *users["email"].head(50), *users["phone"].head(50), *users["full_name"].head(50)}
    raw_ids = set(pd.read_parquet(shop / "events", columns=["user_id"])["user_id"].unique())
    home = tmp_path / "home"
    cfg = RunConfig.from_env(
        home=home, source=shop_source(shop), models=("popularity", "ease"), fusions=("blend",), n_trials=1
    )
    caplog.set_level(logging.DEBUG)
    ingest(cfg)
    summary = run_pipeline(dataclasses.replace(cfg, auto_approve=True))
    assert summary["promote"]  # the run went all the way to the serving store

    scanned = 0
    for path in home.rglob("*"):
        if path.is_file() and "/artifacts/code/" not in str(path):  # the model's copy of this repo's source
            data = path.read_bytes()
            scanned += 1
            leaked = [s for s in secrets if s.encode() in data]
            assert not leaked, f"{path} holds personal data or the key: {leaked[:3]}"
            ids = [u for u in raw_ids if u.encode() in data]
            assert not ids, f"{path} holds raw user ids: {ids[:3]}"
    assert scanned > 50
    validated = pd.read_parquet(cfg.paths.validated / "users.parquet")
    assert not set(privacy.personal_columns(validated.columns))
    assert not raw_ids & set(validated["user_id"])
    logged = caplog.text
    assert KEY not in logged and not [s for s in secrets if s in logged]
    assert not [u for u in raw_ids if u in logged]
