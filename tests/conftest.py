"""Shared fixtures: a fresh FusionRec home per test and real-service probes (skip only when unreachable)."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
# Spark's py4j logs "Closing down clientserver connection" from __del__ at exit, after pytest closed its streams
logging.getLogger("py4j").setLevel(logging.WARNING)

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
POSTGRES_HOST, POSTGRES_PORT = "127.0.0.1", 5432


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(autouse=True)
def no_config_leaks_between_tests():
    """A test (or the CLI it runs in-process) that sets FUSIONREC_* / MLFLOW_* variables must not change the
    configuration every later test sees: those variables are put back as they were after each test."""
    watched = ("FUSIONREC_", "MLFLOW_")
    before = {key: value for key, value in os.environ.items() if key.startswith(watched)}
    yield
    for key in [key for key in os.environ if key.startswith(watched) and key not in before]:
        del os.environ[key]
    os.environ.update(before)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def redis_url() -> str:
    if not reachable(REDIS_HOST, REDIS_PORT):
        pytest.skip(f"Redis not reachable at {REDIS_HOST}:{REDIS_PORT}")
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/0"


@pytest.fixture
def postgres_url() -> str:
    if not reachable(POSTGRES_HOST, POSTGRES_PORT):
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_HOST}:{POSTGRES_PORT}")
    return f"postgresql+psycopg2://postgres@{POSTGRES_HOST}:{POSTGRES_PORT}/test"
