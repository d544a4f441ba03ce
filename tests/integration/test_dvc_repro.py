"""`dvc repro` from a clean clone runs the same stages, records dvc.lock, pushes to the local remote, and tags
MLflow runs with the DVC hash of the validated data."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def _sh(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, f"{args} failed:\n{(proc.stdout + proc.stderr)[-3000:]}"
    return proc.stdout


def test_dvc_repro_from_a_clean_clone(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FUSIONREC", "MLFLOW"))}
    env |= {
        "PATH": f"{BIN}:{env.get('PATH', '')}",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "GIT_PYTHON_REFRESH": "quiet",
    }
    _sh(["git", "clone", "--quiet", str(REPO), str(clone)], tmp_path, env)
    # the pipeline as committed, with a small budget so the test stays quick
    (clone / "params.yaml").write_text(
        yaml.safe_dump({"dataset": "ml-100k", "models": "ease,itemknn", "fusions": "blend", "n_trials": 1})
    )
    _sh([str(BIN / "dvc"), "repro"], clone, env)

    lock = yaml.safe_load((clone / "dvc.lock").read_text())["stages"]
    assert set(lock) == {"ingest", "validate", "features", "train", "evaluate"}
    validated = next(o for o in lock["validate"]["outs"] if o["path"] == "dvc-run/data/validated")
    metrics = json.loads((clone / "dvc-run-metrics.json").read_text())
    assert metrics["test"]["selected"]["ndcg@10"] > 0.4

    with sqlite3.connect(clone / "dvc-run" / "mlflow.db") as db:
        hashes = {row[0] for row in db.execute("select value from tags where key = 'dvc_data_hash'")}
    assert hashes == {validated["md5"]}

    _sh([str(BIN / "dvc"), "push"], clone, env)
    assert "up to date" in _sh([str(BIN / "dvc"), "status"], clone, env)
    assert (clone / ".dvc-storage").is_dir()
