"""The `fusionrec` command line: --help everywhere, one clear line and a non-zero exit on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from fusionrec.cli import cli

COMMANDS = sorted(cli.commands)


def test_every_command_has_help() -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["--help"]).exit_code == 0
    for name in COMMANDS:
        result = runner.invoke(cli, [name, "--help"])
        assert result.exit_code == 0, name
        first_words = " ".join((cli.commands[name].help or "").split()[:3])
        assert "Usage:" in result.output and first_words and first_words in " ".join(result.output.split())


def test_expected_commands_exist() -> None:
    expected = {
        "ingest",
        "validate",
        "version",
        "split",
        "features",
        "train",
        "fuse",
        "evaluate",
        "bench",
        "bench-report",
        "register",
        "approve",
        "reject",
        "promote",
        "rollback",
        "serve",
        "recommend",
        "status",
        "run",
        "train-distributed",
    }
    assert expected <= set(COMMANDS)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("user_id,timestamp\nu1,1600000000\n", "missing required column 'item_id'"),
        ("user_id,item_id,user_id\nu1,i1,u2\n", "header repeats column 'user_id'"),
        ("", "file is empty"),
    ],
)
def test_bad_ingest_input_is_one_line_and_nonzero(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    # the installed console script, as a user runs it
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "fusionrec"),
            "--home",
            str(tmp_path / "h"),
            "ingest",
            "--interactions",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0] and "bad.csv" in errors[0]
    assert "Traceback" not in proc.stderr


def test_ingest_json_and_run_settings_are_remembered(tmp_path: Path) -> None:
    runner = CliRunner()
    home = tmp_path / "h"
    result = runner.invoke(cli, ["--home", str(home), "ingest", "--dataset", "instacart", "--json"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert (answer["accepted"], answer["rejected"], answer["rows_read"]) == (150_000, 0, 150_000)
    assert answer["quarantine"] == str((home / "data" / "quarantine").resolve()) and answer["reasons"] == {}
    saved = json.loads((home / "run.json").read_text())
    assert saved["source"]["dataset"] == "instacart"
    assert set(saved) == {"source", "protocol"}  # deployment switches are never remembered


def test_environment_switches_win_over_remembered_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import click

    from fusionrec.cli import _config

    home = tmp_path / "h"
    assert CliRunner().invoke(cli, ["--home", str(home), "ingest", "--dataset", "instacart"]).exit_code == 0
    monkeypatch.setenv("FUSIONREC_SERVING_STORE", "redis")
    ctx = click.Context(cli, obj={"home": str(home), "globals": {}})
    cfg = _config(ctx)
    assert cfg.serving_store == "redis" and cfg.source.dataset == "instacart"
    assert cfg.effective_protocol == "next-basket"


def test_dataset_and_file_are_exclusive(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["--home", str(tmp_path), "ingest", "--dataset", "ml-100k", "--interactions", "x.csv"]
    )
    assert result.exit_code == 2 and "not both" in result.output


def test_recommend_before_promotion_is_a_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--home", str(tmp_path), "recommend", "1"])
    assert result.exit_code == 1 and "no model version has been promoted" in result.output


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["fuse"], 1, "no trained models: run the train stage first"),
        (["evaluate"], 1, "nothing to evaluate"),
        (["register"], 1, "nothing to register"),
        (["train", "--models", "ease,nosuch"], 1, "unknown model(s) nosuch; available:"),
        (["train", "--n-trials", "0"], 2, "Invalid value for '--n-trials'"),
        (["approve", "--by", "x"], 1, "has no challenger alias"),
    ],
)
def test_stages_out_of_order_fail_with_one_line(
    tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    result = CliRunner().invoke(cli, ["--home", str(tmp_path / "h"), *args])
    assert result.exit_code == code, result.output
    assert message in result.output and "Traceback" not in result.output


def test_json_output_stays_clean_when_libraries_print(tmp_path: Path) -> None:
    # `dvc init` prints to stdout; the command's stdout must still be exactly its JSON answer
    runner = CliRunner()
    base = ["--home", str(tmp_path / "h")]
    assert runner.invoke(cli, [*base, "ingest", "--dataset", "ml-100k"]).exit_code == 0
    assert runner.invoke(cli, [*base, "validate"]).exit_code == 0
    result = runner.invoke(cli, [*base, "version", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["md5"].endswith(".dir")


def test_bad_config_file_is_one_error_line_and_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FUSIONREC_CONFIG", "")  # recorded, so the CLI's own setting is undone afterwards
    monkeypatch.delenv("FUSIONREC_CONFIG")
    config = tmp_path / "fusionrec.yaml"
    config.write_text("profile: staging\n")
    result = CliRunner().invoke(cli, ["--home", str(tmp_path / "h"), "--config", str(config), "status"])
    assert result.exit_code == 2
    assert "error: unknown profile 'staging'; choose one of local, production" in result.output
    assert "Traceback" not in result.output
