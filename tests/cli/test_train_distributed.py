"""`fusionrec train-distributed`: options reach the config, data comes from the chosen source, errors are one
line with a non-zero exit. The training itself is stubbed here (tests/pipelines/test_distributed.py runs it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import pipelines.distributed
from fusionrec.commands.distributed import train_distributed
from models.base import InteractionData
from pipelines.distributed import DistributedConfig, DistributedResult, WorkerReport


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []

    def fake(data: InteractionData, model_path: Path, config: DistributedConfig) -> DistributedResult:
        seen.append({"data": data, "model_path": model_path, "config": config})
        if config.batch_size == 99_999:
            raise ValueError("100000 pairs give each of 2 workers less than one batch of 99999")
        reports = [WorkerReport(i, 50_000, "s", 97, 4.2, 1.0, 5.0, "w") for i in range(config.workers)]
        return DistributedResult(config.workers, 6.0, 4.2, 4.1, Path(model_path), reports)

    monkeypatch.setattr(pipelines.distributed, "train_distributed", fake)
    return seen


def invoke(home: Path, *args: str) -> Any:
    return CliRunner().invoke(train_distributed, list(args), obj={"home": str(home), "globals": {}})


def test_options_reach_the_config_and_ml100k_is_the_data(home: Path, calls: list[dict[str, Any]]) -> None:
    result = invoke(home, "--workers", "3", "--epochs", "2", "--batch-size", "256", "--seed", "7", "--json")
    assert result.exit_code == 0, result.output
    (call,) = calls
    assert call["config"] == DistributedConfig(workers=3, epochs=2, batch_size=256, seed=7)
    assert call["data"].matrix.shape == (943, 1682) and call["data"].matrix.nnz == 100_000
    assert call["model_path"] == home.resolve() / "artifacts" / "distributed" / "two_tower"
    payload = json.loads(result.output)
    assert payload["workers"] == 3 and [r["steps"] for r in payload["reports"]] == [97, 97, 97]


def test_text_output_has_a_line_per_worker(home: Path, calls: list[dict[str, Any]], tmp_path: Path) -> None:
    result = invoke(home, "--out", str(tmp_path / "model"))
    assert result.exit_code == 0, result.output
    assert calls[0]["model_path"] == tmp_path / "model"
    lines = result.output.splitlines()
    assert lines[0].startswith("worker 0: 50000 pairs, 97 steps") and lines[1].startswith("worker 1:")
    assert f"model saved to {tmp_path / 'model'}" in lines[2]


def test_errors_are_one_line_and_exit_non_zero(home: Path, calls: list[dict[str, Any]]) -> None:
    result = invoke(home, "--batch-size", "99999")
    assert result.exit_code == 1 and "error: 100000 pairs give each" in result.output
    result = invoke(home, "--source", "home")
    assert result.exit_code == 2 and "no train split" in result.output
    assert invoke(home, "--workers", "0").exit_code == 2  # click's range check
