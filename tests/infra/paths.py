"""Where the deployment files live, for the tests in this folder."""

from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
COMPOSE_FILE = INFRA / "compose" / "docker-compose.yml"
HELM_DIR = INFRA / "helm"
DOCKER_DIR = INFRA / "docker"


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())
