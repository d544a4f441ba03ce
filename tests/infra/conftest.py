"""The helm binary for the chart tests (skip with the reason when there is none)."""

from __future__ import annotations

import shutil

import pytest

from tests.infra.paths import REPO


@pytest.fixture(scope="session")
def helm() -> str:
    """The venv's helm (dev dependency helm-binary), else one on PATH."""
    local = REPO / ".venv" / "bin" / "helm"
    found = str(local) if local.exists() else shutil.which("helm")
    if not found:
        pytest.skip("helm not found (.venv/bin/helm from the dev dependency helm-binary, or on PATH)")
    return found
