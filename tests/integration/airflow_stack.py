"""A real Airflow 3 deployment for tests: api-server, scheduler (LocalExecutor) and dag-processor on loopback,
metadata in a fresh PostgreSQL database, one SimpleAuthManager user with a known password.

    with airflow_stack(home, user="reviewer") as stack:
        api = stack.client()          # httpx client with the user's JWT
        api.get("/api/v2/dags")

Every service leads its own session; all their processes are killed on exit and the database dropped, even
on failure; on failure the tails of the service logs and of the newest task logs are printed.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import POSTGRES_HOST, POSTGRES_PORT
from tests.integration.test_dag_e2e import BIN, REPO, _env, _run

ROLES = ("postgres", "root")  # the first that the local server lets in (trust auth)
SERVICES = {
    "api-server": ["api-server", "--host", "127.0.0.1", "--workers", "1"],
    "scheduler": ["scheduler"],
    "dag-processor": ["dag-processor"],
}
# With the CeleryExecutor the scheduler queues tasks on the broker; separate workers run them.
CELERY_WORKER = ["celery", "worker", "--concurrency", "1", "--without-mingle", "--without-gossip"]


@dataclass
class AirflowStack:
    url: str  # http://127.0.0.1:<port>
    env: dict[str, str]  # the Airflow + FusionRec environment every process shares
    user: str
    password: str
    logs: Path
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def client(self) -> httpx.Client:
        """A REST client authenticated as the stack's user (JWT from POST /auth/token)."""
        answer = httpx.post(
            f"{self.url}/auth/token", json={"username": self.user, "password": self.password}, timeout=30
        )
        answer.raise_for_status()
        token = answer.json()["access_token"]
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            assert proc.poll() is None, f"airflow {name} exited with {proc.returncode}"

    def log_tails(self, chars: int = 4000, tasks: int = 2) -> str:
        """The end of each service log and of the ``tasks`` most recently written task logs."""
        task_logs = Path(self.env["AIRFLOW_HOME"]).glob("logs/dag_id=*/**/*.log")
        newest = sorted(task_logs, key=lambda path: path.stat().st_mtime)[-tasks:]
        return "\n".join(
            f"===== {path} (tail) =====\n{path.read_text(errors='replace')[-chars:]}"
            for path in [*sorted(self.logs.glob("*.log")), *newest]
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(what: str, check: Callable[[], Any], timeout: float, every: float = 2.0) -> Any:
    """Poll ``check`` until it returns something truthy (returned) or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def _admin_connection():  # -> psycopg2 connection with autocommit, as the first role that works
    import psycopg2

    errors = []
    for role in ROLES:
        try:
            conn = psycopg2.connect(host=POSTGRES_HOST, port=POSTGRES_PORT, user=role, dbname="test")
        except psycopg2.OperationalError as exc:
            errors.append(f"{role}: {exc}")
            continue
        conn.autocommit = True
        return conn
    raise RuntimeError("no PostgreSQL role with trust auth: " + "; ".join(errors))


def _stack_env(
    home: Path, sql_conn: str, port: int, user: str, passwords: Path, executor: str, extra: dict[str, str]
) -> dict[str, str]:
    return _env(
        home,
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=sql_conn,
        AIRFLOW__CORE__EXECUTOR=executor,
        AIRFLOW__CORE__PARALLELISM="2",  # 2 shared cores; the DAG is a chain anyway
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{port}/execution/",
        AIRFLOW__API__HOST="127.0.0.1",
        AIRFLOW__API__PORT=str(port),
        AIRFLOW__API__BASE_URL=f"http://127.0.0.1:{port}",
        # Shared by all processes: tokens the api-server signs must verify in the scheduler's workers.
        AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_hex(32),
        AIRFLOW__API__SECRET_KEY=secrets.token_hex(16),
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=f"{user}:admin",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(passwords),
        # Only the runs a test triggers: no @daily run appears when the DAG is unpaused.
        AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE="False",
        AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="True",
        **extra,
    )


def _start(name: str, env: dict[str, str], logs: Path, args: list[str] | None = None) -> subprocess.Popen:
    with (logs / f"{name}.log").open("w") as log:
        return subprocess.Popen(
            [str(BIN / "airflow"), *(args or SERVICES[name])],
            env=env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: stop() kills its workers too
        )


def _session_groups(session: int) -> set[int]:
    """Process groups of every live process in ``session`` (task processes get their own group)."""
    groups = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) == session:  # fields after the command: state ppid pgrp session ...
            groups.add(int(fields[2]))
    return groups


def _signal_session(session: int, sig: signal.Signals) -> None:
    for group in _session_groups(session):
        with suppress(ProcessLookupError):
            os.killpg(group, sig)


def _stop(procs: list[subprocess.Popen], grace: float = 20) -> None:
    """SIGTERM every service's session (each leads one: start_new_session) at once, SIGKILL what is left
    after ``grace`` seconds."""
    for proc in procs:
        _signal_session(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(
        proc.poll() is None or _session_groups(proc.pid) for proc in procs
    ):
        time.sleep(0.5)
    for proc in procs:
        _signal_session(proc.pid, signal.SIGKILL)
        proc.wait(timeout=grace)


@contextmanager
def airflow_stack(
    home: Path,
    user: str = "reviewer",
    executor: str = "LocalExecutor",
    extra_env: dict[str, str] | None = None,
    celery_broker: str | None = None,
) -> Iterator[AirflowStack]:
    """Create the database, migrate, start the three services and wait until the API answers. With
    ``celery_broker`` (a Redis URL) the stack runs the CeleryExecutor with one separate Celery worker, results
    in the metadata database; ``extra_env`` reaches every service and task."""
    admin = _admin_connection()
    role = admin.info.user
    database = f"fusionrec_airflow_{secrets.token_hex(4)}"
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {database}")
    port = free_port()
    password = secrets.token_urlsafe(12)
    logs = home / "airflow-logs"
    logs.mkdir(parents=True, exist_ok=True)
    passwords = home / "airflow-passwords.json"
    passwords.write_text(json.dumps({user: password}))
    sql_conn = f"postgresql+psycopg2://{role}@{POSTGRES_HOST}:{POSTGRES_PORT}/{database}"
    extra = dict(extra_env or {})
    if celery_broker:
        executor = "CeleryExecutor"
        extra |= {
            "AIRFLOW__CELERY__BROKER_URL": celery_broker,
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql://{role}@{POSTGRES_HOST}:{POSTGRES_PORT}/{database}",
        }
    stack = AirflowStack(
        url=f"http://127.0.0.1:{port}",
        env=_stack_env(home, sql_conn, port, user, passwords, executor, extra),
        user=user,
        password=password,
        logs=logs,
    )
    try:
        _run([str(BIN / "airflow"), "db", "migrate"], stack.env, logs / "migrate.log", timeout=600)
        for name in SERVICES:
            stack.procs[name] = _start(name, stack.env, logs)
        if celery_broker:
            stack.procs["celery-worker"] = _start("celery-worker", stack.env, logs, CELERY_WORKER)
        wait_for("the api-server", lambda: _healthy(stack), timeout=180)
        yield stack
    except BaseException:
        print(stack.log_tails())
        raise
    finally:
        _stop(list(stack.procs.values()))
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        admin.close()


def _healthy(stack: AirflowStack) -> bool:
    stack.check_alive()
    try:
        return httpx.get(f"{stack.url}/api/v2/monitor/health", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False
