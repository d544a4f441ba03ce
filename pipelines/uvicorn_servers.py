"""One-worker uvicorn servers on loopback, for benchmarks: start on a free port, wait until an endpoint answers,
stop. Each server is its own process, its output goes to a log file shown when it fails to start."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
STARTUP_SECONDS = 120.0  # a cold import of the app on a busy 2-core machine takes a while
REPO_ROOT = Path(__file__).resolve().parent.parent


class ServerStartError(RuntimeError):
    """A server exited or did not answer in time; the message has the end of its log."""


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def start_server(name: str, factory: str, env: dict[str, str], workdir: Path) -> Server:
    """One-worker uvicorn on a free loopback port, access log off, stderr to ``workdir/<name>.log``."""
    port = free_port()
    log_path = workdir / f"{name}.log"
    command = [
        sys.executable, "-m", "uvicorn", factory, "--factory", "--host", HOST, "--port", str(port),
        "--no-access-log", "--log-level", "warning", "--timeout-keep-alive", "75",
    ]  # fmt: skip
    with log_path.open("wb") as out:
        process = subprocess.Popen(command, env=env, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT)
    return Server(name, process, port, log_path)


def wait_ready(server: Server, path: str, timeout: float = STARTUP_SECONDS) -> bytes:
    """Poll ``GET path`` until it answers 200; returns the body. Raises if the server dies or never does."""
    import http.client

    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise ServerStartError(
                f"{server.name} exited with code {server.process.returncode}: {_tail(server)}"
            )
        conn = http.client.HTTPConnection(HOST, server.port, timeout=5)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read()
            if response.status == 200:
                return body
            last = f"HTTP {response.status}: {body[:300]!r}"
        except OSError as exc:
            last = str(exc)
        finally:
            conn.close()
        time.sleep(0.2)
    raise ServerStartError(
        f"{server.name} not ready after {timeout:.0f}s on {path} ({last}): {_tail(server)}"
    )


def _tail(server: Server) -> str:
    text = server.log_path.read_text(errors="replace") if server.log_path.exists() else ""
    return text[-1500:] or "(no output)"


def stop_server(server: Server) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


def server_env(**extra: str) -> dict[str, str]:
    """This process's environment with the repository importable, plus ``extra``."""
    path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **extra}
