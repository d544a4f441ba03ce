"""Production services for integration tests: throwaway PostgreSQL databases, an MLflow tracking server on one
of them, the serving API; each stopped and dropped on exit, even on failure."""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.conftest import POSTGRES_HOST, POSTGRES_PORT
from tests.integration.airflow_stack import _admin_connection, _stop, free_port, wait_for
from tests.integration.test_dag_e2e import BIN, REPO


@contextmanager
def throwaway_databases(*kinds: str) -> Iterator[dict[str, str]]:
    """``{kind: postgresql://role@host:port/fr_<kind>_<hex>}``, created now and dropped on exit."""
    admin = _admin_connection()
    role, suffix = admin.info.user, secrets.token_hex(4)
    names = {kind: f"fr_{kind}_{suffix}" for kind in kinds}
    try:
        with admin.cursor() as cur:
            for name in names.values():
                cur.execute(f"CREATE DATABASE {name}")
        yield {
            kind: f"postgresql://{role}@{POSTGRES_HOST}:{POSTGRES_PORT}/{name}"
            for kind, name in names.items()
        }
    finally:
        with admin.cursor() as cur:
            for name in names.values():
                cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def _healthy(url: str, proc: subprocess.Popen, what: str) -> bool:
    assert proc.poll() is None, f"{what} exited with {proc.returncode}"
    try:
        return httpx.get(f"{url}/health", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def service(what: str, args: list[str], url: str, env: dict[str, str], log: Path, timeout: float = 180):
    """Start ``args`` in its own session, wait for ``url``/health, yield ``url``; stop it on exit."""
    with log.open("w") as out:
        proc = subprocess.Popen(
            args, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_for(what, lambda: _healthy(url, proc, what), timeout=timeout)
        yield url
    except BaseException:
        print(f"===== {what} log (tail) =====\n{log.read_text(errors='replace')[-3000:]}")
        raise
    finally:
        _stop([proc])


@contextmanager
def mlflow_server(backend: str, artifacts: Path, env: dict[str, str], log: Path) -> Iterator[str]:
    """An MLflow tracking server: runs and the model registry in PostgreSQL ``backend``, artifacts served
    by the server from ``artifacts`` (clients never touch that folder)."""
    port = free_port()
    backend = backend.replace("postgresql://", "postgresql+psycopg2://", 1)
    args = [
        str(BIN / "mlflow"), "server", "--backend-store-uri", backend, "--serve-artifacts",
        "--artifacts-destination", artifacts.as_uri(), "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1",
    ]  # fmt: skip
    with service("the MLflow server", args, f"http://127.0.0.1:{port}", env, log) as url:
        yield url


@contextmanager
def serving_api(env: dict[str, str], log: Path) -> Iterator[str]:
    """``fusionrec serve`` on a free port."""
    port = free_port()
    args = [str(BIN / "fusionrec"), "serve", "--host", "127.0.0.1", "--port", str(port)]
    with service("the serving API", args, f"http://127.0.0.1:{port}", env, log) as url:
        yield url
