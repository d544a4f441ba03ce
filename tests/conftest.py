"""Shared fixtures: a fresh FusionRec home per test and real-service probes (skip only when unreachable)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
POSTGRES_HOST, POSTGRES_PORT = "127.0.0.1", 5432


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


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
