"""RunConfig's profiles and config file: what switches, in which order, and the errors on bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from fusionrec.config import ConfigError, RunConfig, postgres_database_url


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for var in ("FUSIONREC_PROFILE", "FUSIONREC_CONFIG", "FUSIONREC_POSTGRES_URL", "FUSIONREC_REDIS_URL",
                "MLFLOW_TRACKING_URI", "FUSIONREC_ONLINE_STORE", "FUSIONREC_SERVING_STORE",
                "FUSIONREC_EVENTS_URL", "FUSIONREC_OPTUNA_STORAGE", "FUSIONREC_OFFLINE_STORE",
                "FUSIONREC_OFFLINE_STORE_URL"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)


def test_local_profile_is_embedded(tmp_path: Path):
    cfg = RunConfig.from_env(home=tmp_path)
    assert cfg.profile == "local"
    assert (cfg.online_store, cfg.serving_store, cfg.offline_store) == ("sqlite", "sqlite", "file")
    assert cfg.tracking_uri.startswith("sqlite:///") and cfg.optuna_url.startswith("sqlite:///")
    assert cfg.events_url is None


def test_production_profile_switches_every_store(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("FUSIONREC_PROFILE", "production")
    monkeypatch.setenv("FUSIONREC_POSTGRES_URL", "postgresql://fr:pw@db:5432/ignored")
    cfg = RunConfig.from_env(home=tmp_path)
    assert cfg.profile == "production"
    assert (cfg.online_store, cfg.serving_store, cfg.offline_store) == ("redis", "redis", "postgres")
    assert cfg.offline_store_url == "postgresql://fr:pw@db:5432/fusionrec_features"
    assert cfg.events_url == "postgresql://fr:pw@db:5432/fusionrec_events"
    assert cfg.optuna_url == "postgresql+psycopg2://fr:pw@db:5432/fusionrec_optuna"
    assert cfg.tracking_uri == "http://127.0.0.1:5000"


def test_precedence_profile_then_file_then_env_then_explicit(tmp_path: Path, monkeypatch):
    config = tmp_path / "fusionrec.yaml"
    config.write_text("profile: production\nserving_store: sqlite\nn_trials: 7\nmodels: [ease, ials]\n")
    monkeypatch.setenv("FUSIONREC_CONFIG", str(config))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    cfg = RunConfig.from_env(home=tmp_path)
    assert cfg.profile == "production" and cfg.online_store == "redis"  # from the profile
    assert cfg.serving_store == "sqlite" and cfg.n_trials == 7 and cfg.models == ("ease", "ials")  # file
    assert cfg.tracking_uri == "http://mlflow:5000"  # environment over profile
    assert RunConfig.from_env(home=tmp_path, n_trials=2, profile="local").online_store == "sqlite"


def test_config_round_trips_through_dict(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("FUSIONREC_PROFILE", "production")
    cfg = RunConfig.from_env(home=tmp_path)
    monkeypatch.delenv("FUSIONREC_PROFILE")
    assert RunConfig.from_dict(cfg.to_dict()) == cfg  # what the DAG passes between tasks


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("profile: staging\n", "unknown profile 'staging'"),
        ("n_trails: 3\n", "unknown setting(s) n_trails"),
        ("- a list\n", "expected a mapping of settings, got list"),
        ("a: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_config_file_is_one_clear_line(tmp_path: Path, monkeypatch, text: str, message: str):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    monkeypatch.setenv("FUSIONREC_CONFIG", str(config))
    with pytest.raises(ConfigError) as error:
        RunConfig.from_env(home=tmp_path)
    assert message in str(error.value) and "\n" not in str(error.value)
    monkeypatch.setenv("FUSIONREC_CONFIG", str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="missing.yaml: can't read the config file"):
        RunConfig.from_env(home=tmp_path)


def test_postgres_database_url_replaces_the_database():
    assert postgres_database_url("postgresql://u@h:5432/test?sslmode=require", "x") == (
        "postgresql://u@h:5432/x?sslmode=require"
    )
    assert (
        postgres_database_url("postgresql://u@h", "x", "postgresql+psycopg2") == "postgresql+psycopg2://u@h/x"
    )
