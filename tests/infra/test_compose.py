"""infra/compose/docker-compose.yml: the whole stack is there, wired the way the production profile expects,
and a real Compose implementation accepts it (`docker compose config` or Debian's docker-compose)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.infra.paths import COMPOSE_FILE, INFRA, load_yaml

AIRFLOW_SERVICES = {
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
}
SERVICES = AIRFLOW_SERVICES | {"postgres", "redis", "mlflow", "serving"}
COMMANDS = {
    "airflow-apiserver": ["airflow", "api-server"],
    "airflow-scheduler": ["airflow", "scheduler"],
    "airflow-dag-processor": ["airflow", "dag-processor"],
    "airflow-triggerer": ["airflow", "triggerer"],
    "airflow-worker": ["airflow", "celery", "worker"],
    "serving": ["serve", "--host", "0.0.0.0", "--port", "8000"],
}
DATABASES = {"airflow", "fusionrec_mlflow", "fusionrec_events", "fusionrec_optuna", "fusionrec_features"}
SECRETS = {
    "POSTGRES_PASSWORD": "pg-secret",
    "AIRFLOW_ADMIN_PASSWORD": "admin-secret",
    "AIRFLOW_FERNET_KEY": "fernet-secret",
    "AIRFLOW_API_SECRET_KEY": "api-secret",
    "AIRFLOW_JWT_SECRET": "jwt-secret",
    "FUSIONREC_ADMIN_TOKEN": "token-secret",
    "FUSIONREC_PSEUDONYM_KEY": "pseudonym-secret",
}


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_yaml(COMPOSE_FILE)


def _interpolated(value: str) -> str:
    """Compose's interpolation for the plain cases this file uses: ${VAR}, ${VAR:-default}, ${VAR:?error}, $$."""

    def replace(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        if name in SECRETS:
            return SECRETS[name]
        return arg if op == ":-" else ""

    return re.sub(r"\$\{([A-Z_][A-Z0-9_]*)(?:(:-|:\?)([^}]*))?\}", replace, value).replace("$$", "$")


def _env(service: dict) -> dict[str, str]:
    return {k: _interpolated(str(v)) for k, v in (service.get("environment") or {}).items()}


def test_compose_spec_without_version_and_every_service(compose: dict) -> None:
    assert "version" not in compose, "Compose spec: no top-level version key"
    assert set(compose["services"]) == SERVICES


def test_every_airflow_service_shares_the_env_anchors(compose: dict) -> None:
    fusionrec_env = compose["x-fusionrec-env"]
    airflow_env = compose["x-airflow-env"]
    assert fusionrec_env.items() <= airflow_env.items(), "x-airflow-env extends x-fusionrec-env"
    for name in AIRFLOW_SERVICES:
        env = compose["services"][name]["environment"]
        assert airflow_env.items() <= env.items(), f"{name} does not carry every x-airflow-env value"
    assert fusionrec_env.items() <= compose["services"]["serving"]["environment"].items()


def test_the_production_profile_variables(compose: dict) -> None:
    env = {k: _interpolated(str(v)) for k, v in compose["x-fusionrec-env"].items()}
    assert env["FUSIONREC_PROFILE"] == "production"
    assert env["FUSIONREC_HOME"] == "/var/lib/fusionrec"
    assert env["FUSIONREC_POSTGRES_URL"] == "postgresql://postgres:pg-secret@postgres:5432"
    assert env["FUSIONREC_REDIS_URL"] == "redis://redis:6379/0"
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert env["FUSIONREC_PSEUDONYM_KEY"] == "pseudonym-secret"
    assert env["FUSIONREC_METRICS_URL"] == "http://serving:8000/metrics"
    # the admin token only where it is used
    assert _env(compose["services"]["serving"])["FUSIONREC_ADMIN_TOKEN"] == "token-secret"
    assert "FUSIONREC_ADMIN_TOKEN" not in compose["x-airflow-env"]


def test_airflow_celery_and_shared_secrets(compose: dict) -> None:
    env = {k: _interpolated(str(v)) for k, v in compose["x-airflow-env"].items()}
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert (
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        == "postgresql+psycopg2://postgres:pg-secret@postgres:5432/airflow"
    )
    assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://redis:6379/1"
    assert (
        env["AIRFLOW__CELERY__RESULT_BACKEND"] == "db+postgresql://postgres:pg-secret@postgres:5432/airflow"
    )
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    assert compose["services"]["airflow-apiserver"]["ports"] == ["${AIRFLOW_PORT:-8080}:8080"]
    for key in ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY", "AIRFLOW__CORE__FERNET_KEY"):
        assert env[key].endswith("-secret"), f"{key} must come from the environment (.env)"
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == "/opt/fusionrec/dags"


def test_service_commands(compose: dict) -> None:
    for name, command in COMMANDS.items():
        assert compose["services"][name]["command"] == command, name
    mlflow = " ".join(compose["services"]["mlflow"]["command"])
    for flag in ("--serve-artifacts", "--artifacts-destination /var/lib/mlflow/artifacts", "--allowed-hosts"):
        assert flag in mlflow
    assert "mlflow db upgrade" in mlflow
    backend = _env(compose["services"]["mlflow"])["MLFLOW_BACKEND_STORE_URI"]
    assert backend == "postgresql+psycopg2://postgres:pg-secret@postgres:5432/fusionrec_mlflow"
    assert "/var/lib/mlflow/artifacts" in [v.split(":")[1] for v in compose["services"]["mlflow"]["volumes"]]


def test_healthchecks_and_depends_on(compose: dict) -> None:
    services = compose["services"]
    for name, service in services.items():
        if name != "airflow-init":
            assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        for target, rule in (service.get("depends_on") or {}).items():
            assert target in services and target != name, f"{name} depends on unknown {target}"
            condition = rule["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[target], (
                    f"{name} waits for {target}, which has no healthcheck"
                )
            else:
                assert (condition, target) == ("service_completed_successfully", "airflow-init")
    for name in AIRFLOW_SERVICES - {"airflow-init"}:
        assert services[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
    assert services["airflow-worker"]["depends_on"]["airflow-apiserver"]["condition"] == "service_healthy"
    # workers scale with --scale: no fixed container name, no published port
    assert "container_name" not in services["airflow-worker"] and "ports" not in services["airflow-worker"]


def test_volumes_declared_and_the_shared_home(compose: dict) -> None:
    declared = set(compose["volumes"])
    used = set()
    for name, service in compose["services"].items():
        mounts = dict(v.split(":")[:2] for v in service.get("volumes", []))
        used |= {source for source in mounts if not source.startswith((".", "/"))}
        if name in AIRFLOW_SERVICES or name == "serving":
            home = _env(service)["FUSIONREC_HOME"]
            assert mounts.get("fusionrec-home") == home, f"{name} must mount fusionrec-home at {home}"
    assert used == declared, f"declared but unused: {declared - used}; used but undeclared: {used - declared}"


def test_postgres_init_creates_every_database(compose: dict) -> None:
    assert "./postgres-init:/docker-entrypoint-initdb.d:ro" in compose["services"]["postgres"]["volumes"]
    sql = (INFRA / "compose" / "postgres-init" / "01-databases.sql").read_text()
    assert set(re.findall(r"^CREATE DATABASE (\w+);", sql, flags=re.M)) == DATABASES


def test_airflow_init_migrates_and_writes_the_admin_password(compose: dict, tmp_path: Path) -> None:
    """Run the one-shot's script with a stand-in `airflow`: it must migrate, then write SimpleAuthManager's
    password file as JSON (a password with quotes and backslashes survives)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    (bin_dir / "airflow").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (bin_dir / "airflow").chmod(0o755)
    (bin_dir / "python").symlink_to(sys.executable)
    service = compose["services"]["airflow-init"]
    shell, flag, script = service["command"]
    password = 'p"a\\ss word'
    passwords_file = tmp_path / "passwords.json"
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file),
        "AIRFLOW_ADMIN_PASSWORD": password,
    }
    result = subprocess.run([shell, flag, script.replace("$$", "$")], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert calls.read_text().split("\n")[0] == "db migrate"
    assert json.loads(passwords_file.read_text()) == {"admin": password}
    users = compose["x-airflow-env"]["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"]
    assert users == "admin:admin"


def _compose_command() -> list[str]:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    if found := shutil.which("docker-compose"):
        return [found]
    pytest.skip(
        "neither `docker compose` nor `docker-compose` on PATH (CI: apt-get install -y docker-compose)"
    )


def _run_config(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    empty_env_file = tmp_path / "empty.env"  # keeps a developer's infra/compose/.env out of the test
    empty_env_file.write_text("")
    command = [*_compose_command(), "--env-file", str(empty_env_file), "-f", str(COMPOSE_FILE), "config"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def test_compose_config_accepts_the_file(tmp_path: Path) -> None:
    base = {k: v for k, v in os.environ.items() if k not in SECRETS}
    result = _run_config(tmp_path, base | SECRETS)
    assert result.returncode == 0, result.stderr
    rendered = yaml.safe_load(result.stdout)
    assert set(rendered["services"]) == SERVICES
    env = rendered["services"]["airflow-worker"]["environment"]
    assert env["FUSIONREC_POSTGRES_URL"] == "postgresql://postgres:pg-secret@postgres:5432"
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == "jwt-secret"


def test_compose_config_refuses_a_missing_secret(tmp_path: Path) -> None:
    base = {k: v for k, v in os.environ.items() if k not in SECRETS}
    result = _run_config(tmp_path, base | {k: v for k, v in SECRETS.items() if k != "AIRFLOW_JWT_SECRET"})
    assert result.returncode != 0
    assert "set AIRFLOW_JWT_SECRET" in result.stderr
