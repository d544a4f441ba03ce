"""Without auto-approve the DAG waits at the human-in-the-loop approval; a reviewer's Approve makes the
challenger the champion (recorded on the model version) and promotes it; a Reject promotes nothing."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.integration.test_dag_e2e import BIN, REPO, _env, _fusionrec, _run

pytestmark = pytest.mark.slow
CONF = {"dataset": "ml-100k", "models": ["popularity"], "n_trials": 1, "auto_approve": False}


def _run_with_reviewer(home: Path, choice: str, user: str, comment: str) -> dict:
    env = _env(home)
    _run([str(BIN / "airflow"), "db", "migrate"], env, home / "migrate.log", timeout=600)
    with (home / "dag.log").open("w") as log:
        dag = subprocess.Popen(
            [str(BIN / "airflow"), "dags", "test", "fusionrec_retrain", "-c", json.dumps(CONF)],
            env=env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            _run(
                [
                    str(BIN / "python"),
                    str(Path(__file__).with_name("hitl_respond.py")),
                    choice,
                    user,
                    comment,
                ],
                env,
                home / "respond.log",
                timeout=1200,
            )
            assert dag.wait(timeout=600) == 0
        finally:
            dag.kill()
    assert "state=success" in (home / "dag.log").read_text().split("DagRun Finished")[-1]
    return _fusionrec(env, "status", "--json")


def test_reviewer_approves_in_airflow(tmp_path: Path) -> None:
    status = _run_with_reviewer(tmp_path / "home", "Approve", "alice", "better than before")
    champion = status["champion"]
    assert champion["version"] == "1"
    assert champion["approval"]["by"] == "alice" and champion["approval"]["auto"] == "false"
    assert champion["approval"]["comment"] == "better than before"
    assert status["serving"]["live_version"].startswith("fusionrec-v1-")


def test_reviewer_rejects_in_airflow(tmp_path: Path) -> None:
    status = _run_with_reviewer(tmp_path / "home", "Reject", "bob", "not good enough")
    assert status["champion"] is None and status["challenger"]["version"] == "1"
    approval = status["challenger"]["approval"]
    assert (
        approval["status"] == "rejected"
        and approval["by"] == "bob"
        and approval["comment"] == "not good enough"
    )
    assert status["serving"]["live_version"] is None
