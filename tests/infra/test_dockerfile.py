"""infra/docker/Dockerfile without a Docker daemon: its instructions parse and say what the deployments rely
on (python:3.11-slim, uv.lock, non-root, the dispatching entry point), every file it copies exists and passes
the build-context filter, and the entry point script routes commands as the compose file and charts expect."""

from __future__ import annotations

import fnmatch
import json
import os
import shlex
import subprocess
import tomllib
from pathlib import Path

import pytest

from fusionrec.cli import cli
from tests.infra.paths import DOCKER_DIR, REPO

DOCKERFILE = DOCKER_DIR / "Dockerfile"
ENTRYPOINT = DOCKER_DIR / "entrypoint.sh"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: comments dropped, backslash continuations joined."""
    result: list[tuple[str, str]] = []
    logical = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not logical and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):  # a comment inside a continued instruction
            continue
        if stripped.endswith("\\"):
            logical += stripped[:-1].rstrip() + " "
            continue
        logical += stripped
        keyword, _, rest = logical.partition(" ")
        result.append((keyword.upper(), rest.strip()))
        logical = ""
    return result


@pytest.fixture(scope="module")
def parsed() -> list[tuple[str, str]]:
    return instructions(DOCKERFILE.read_text())


def _args(parsed: list[tuple[str, str]]) -> dict[str, str]:
    return dict(a.split("=", 1) for k, a in parsed if k == "ARG" and "=" in a)


def test_instruction_parser() -> None:
    text = "# c\nFROM a AS b\nRUN x \\\n    # note\n    && y\nUSER 1\n"
    assert instructions(text) == [("FROM", "a AS b"), ("RUN", "x && y"), ("USER", "1")]


def test_base_image_and_stages(parsed: list[tuple[str, str]]) -> None:
    base = _args(parsed)["PYTHON_IMAGE"]
    assert base.startswith("python:3.11-slim")
    froms = [a for k, a in parsed if k == "FROM"]
    assert froms == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE}"]


def test_dependencies_come_from_uv_lock(parsed: list[tuple[str, str]]) -> None:
    runs = [a for k, a in parsed if k == "RUN"]
    syncs = [r for r in runs if "uv sync" in r]
    assert syncs and all("--frozen" in r and "--no-dev" in r for r in syncs)
    copies = [a for k, a in parsed if k == "COPY"]
    assert any("uv.lock" in c.split() for c in copies)
    assert "UV_PYTHON_DOWNLOADS=never" in " ".join(a for k, a in parsed if k == "ENV")


def test_runs_as_non_root(parsed: list[tuple[str, str]]) -> None:
    users = [a for k, a in parsed if k == "USER"]
    assert users and users[-1] not in {"0", "root"}
    assert f"--uid {users[-1]}" in " ".join(a for k, a in parsed if k == "RUN")


def test_entrypoint_and_venv_path(parsed: list[tuple[str, str]]) -> None:
    entrypoint = json.loads(next(a for k, a in parsed if k == "ENTRYPOINT"))
    assert entrypoint == ["/usr/local/bin/fusionrec-entrypoint"]
    copies = [shlex.split(a) for k, a in parsed if k == "COPY"]
    assert ["infra/docker/entrypoint.sh", "/usr/local/bin/fusionrec-entrypoint"] in copies
    env = " ".join(a for k, a in parsed if k == "ENV")
    assert "UV_PROJECT_ENVIRONMENT=/opt/fusionrec/.venv" in env
    assert "PATH=/opt/fusionrec/.venv/bin:$PATH" in env
    assert "fusionrec" in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]


def _copy_sources(parsed: list[tuple[str, str]]) -> list[str]:
    sources = []
    for keyword, args in parsed:
        words = [w for w in shlex.split(args) if not w.startswith("--")]
        if keyword == "COPY" and "--from" not in args:
            sources += words[:-1]
    return sources


def test_copied_files_exist_and_pass_the_context_filter(parsed: list[tuple[str, str]]) -> None:
    """A renamed package folder must break this test, not the image build."""
    sources = _copy_sources(parsed)
    assert {"fusionrec", "pipelines", "models", "serving", "feature_repo", "dags"} <= set(sources)
    patterns = [
        line.strip()
        for line in (DOCKER_DIR / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: no such path in the repository"
        included = False
        for pattern in patterns:  # last match wins, as in .dockerignore
            negated, body = pattern.startswith("!"), pattern.lstrip("!").rstrip("/")
            if body == "**" or fnmatch.fnmatch(source, body):
                included = negated
        assert included, f"COPY {source} is excluded by Dockerfile.dockerignore"


def _route(tmp_path: Path, *args: str) -> str:
    """What the entry point runs for ``args``, with stand-ins for the real programs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in ("fusionrec", "airflow", "mlflow"):
        (bin_dir / name).write_text(f'#!/bin/sh\necho {name} "$@"\n')
        (bin_dir / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin"}
    result = subprocess.run(["sh", str(ENTRYPOINT), *args], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_entrypoint_routes_commands(tmp_path: Path) -> None:
    assert _route(tmp_path, "serve", "--host", "0.0.0.0") == "fusionrec serve --host 0.0.0.0"
    assert _route(tmp_path, "split") == "fusionrec split"  # also /usr/bin/split: fusionrec wins
    assert _route(tmp_path, "--help") == "fusionrec --help"
    assert _route(tmp_path) == "fusionrec"
    assert _route(tmp_path, "airflow", "celery", "worker") == "airflow celery worker"
    assert _route(tmp_path, "mlflow", "server") == "mlflow server"
    # the official Airflow chart's form: args only, through bash
    assert _route(tmp_path, "bash", "-c", "exec airflow api-server") == "airflow api-server"


def test_entrypoint_passthrough_names_are_not_fusionrec_commands() -> None:
    case_line = next(line for line in ENTRYPOINT.read_text().splitlines() if "airflow |" in line)
    names = {n.strip() for n in case_line.split(")")[0].split("|")}
    assert not names & set(cli.commands), "a fusionrec command would be routed away from fusionrec"
