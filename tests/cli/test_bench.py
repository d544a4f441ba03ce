"""`fusionrec bench` on any interactions file, and `fusionrec bench-report` on its JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from fusionrec.cli import cli
from tests.pipelines.test_pipeline_flow import synthetic_shop

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """A benchmark of a plain CSV with its own column names: no dataset-specific code anywhere."""
    folder = tmp_path_factory.mktemp("bench")
    synthetic_shop(folder / "shop")
    events = pd.read_parquet(folder / "shop" / "data" / "canonical" / "interactions.parquet")
    csv = folder / "events.csv"
    events.rename(columns={"user_id": "customer", "item_id": "sku", "timestamp": "ts"})[
        ["customer", "sku", "rating", "ts"]
    ].to_csv(csv, index=False)
    out = folder / "bench.json"
    args = ["--home", str(folder / "home"), "bench", "--interactions", str(csv), "--user-col", "customer"]
    args += ["--item-col", "sku", "--timestamp-col", "ts", "--models", "popularity,ease,itemknn"]
    args += ["--fusions", "blend,stacking", "--n-trials", "1", "--json", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "selected" in result.stdout and "ndcg@10" in result.stdout  # the printed table
    return json.loads(out.read_text()), out


def test_benchmark_json_has_every_model_and_fusion(document: tuple[dict, Path]) -> None:
    bench, _ = document
    assert (bench["dataset"], bench["protocol"], bench["k"]) == ("events", "msr", 10)
    rows = {r["model"]: r for r in bench["results"]}
    assert set(rows) == {"popularity", "ease", "itemknn", "blend", "stacking"}
    for row in rows.values():
        for key in (
            "ndcg@10",
            "precision@10",
            "recall@10",
            "map@10",
            "coverage",
            "train_seconds",
            "peak_rss_mb",
        ):
            assert isinstance(row[key], float | int), (row["model"], key)
    assert rows["stacking"]["kind"] == "fusion" and rows["ease"]["kind"] == "single"
    assert bench["selected"] in rows
    assert [r["ndcg@10"] for r in bench["results"]] == sorted(
        (r["ndcg@10"] for r in bench["results"]), reverse=True
    )


def test_bench_report_renders_the_json(document: tuple[dict, Path], tmp_path: Path) -> None:
    _, path = document
    out = tmp_path / "docs" / "benchmarks.md"
    result = CliRunner().invoke(cli, ["bench-report", str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    page = out.read_text()
    assert "stacking" in page and "![" in page
    broken = CliRunner().invoke(cli, ["bench-report", str(out), "--out", str(tmp_path / "x.md")])
    assert broken.exit_code != 0 and "Traceback" not in broken.output
