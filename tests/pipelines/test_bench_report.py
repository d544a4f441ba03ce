"""The benchmarks page rendered from small hand-made benchmark documents."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipelines.bench_report import PUBLISHED, main, render_markdown, write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _result(model: str, ndcg: float, kind: str = "single", **extra: float) -> dict[str, Any]:
    return {
        "model": model,
        "kind": kind,
        "ndcg@10": ndcg,
        "precision@10": ndcg / 2,
        "recall@10": ndcg / 3,
        "map@10": ndcg / 4,
        "coverage": 0.3,
        "train_seconds": 1.5,
        "peak_rss_mb": 321.0,
        **extra,
    }


@pytest.fixture
def msr() -> dict[str, Any]:
    return {
        "dataset": "ml-100k",
        "protocol": "msr",
        "k": 10,
        "results": [
            _result("popularity", 0.1234),
            _result("blend", 0.4567, kind="fusion", novelty=9.87),
            _result("ease", 0.4321),
        ],
        "selected": "blend",
        "confidence_interval": {
            "metric": "ndcg@10",
            "versus": "ease",
            "difference": 0.0246,
            "low": 0.0111,
            "high": 0.0382,
            "p_value": 0.0,
        },
        "seconds": 123.4,
        "peak_rss_mb": 987.6,
    }


@pytest.fixture
def basket() -> dict[str, Any]:
    return {
        "dataset": "instacart",
        "protocol": "next-basket",
        "k": 10,
        "results": [_result("buy_again", 0.30), _result("ease", 0.20)],
        "selected": "buy_again",
        "confidence_interval": None,
        "seconds": 10.0,
    }


def _table_row(markdown: str, model: str) -> str:
    return next(line for line in markdown.splitlines() if line.startswith("| ") and model in line)


def test_table_sorted_selected_bold_and_published(tmp_path: Path, msr: dict[str, Any]) -> None:
    markdown = render_markdown([msr], tmp_path / "bench")
    ours = markdown.index("Our models")
    rows = [markdown.index(f"| {name}", ours) for name in ("**blend**", "ease", "popularity")]
    assert rows == sorted(rows)  # by nDCG, best first
    assert "**blend** (selected)" in _table_row(markdown, "blend")
    assert "**" not in _table_row(markdown, "ease")
    assert "0.4567" in markdown and "9.87" in markdown and "1.5" in markdown and "321" in markdown
    # every published ML-100k result, with BiVAE's full row
    for published in PUBLISHED:
        if published.protocol == "msr":
            assert f"| {published.model} |" in markdown
    assert "| 0.4751 | 0.4118 | 0.2191 | 0.1461 |" in _table_row(markdown, "BiVAE")
    assert "different dataset" not in markdown  # same dataset as ours
    assert "+0.0246" in markdown and "[+0.0111, +0.0382]" in markdown and "above zero" in markdown
    assert "123 s" in markdown and "988 MB" in markdown


def test_plot_is_a_png_linked_relatively(tmp_path: Path, msr: dict[str, Any]) -> None:
    markdown = render_markdown([msr], tmp_path / "bench")
    assert "](bench/ml-100k-msr.png)" in markdown
    png = tmp_path / "bench" / "ml-100k-msr.png"
    assert png.read_bytes()[:8] == PNG_SIGNATURE and png.stat().st_size > 5000


def test_temporal_compares_with_another_dataset_clearly_labelled(tmp_path: Path, msr: dict[str, Any]) -> None:
    temporal = msr | {"protocol": "temporal", "confidence_interval": None, "selected": "ease"}
    markdown = render_markdown([temporal], tmp_path / "plots")
    assert "| ADMMSLIM | 0.2904 |" in markdown and "BiVAE" not in markdown
    assert "MovieLens-1M" in markdown and "different dataset from ours (MovieLens-100k)" in markdown
    assert "single model" in markdown  # no interval to report


def test_next_basket_names_our_baseline(tmp_path: Path, basket: dict[str, Any]) -> None:
    markdown = render_markdown([basket], tmp_path / "bench")
    assert "No published numbers" in markdown and "`buy_again`" in markdown
    assert "**buy_again** (selected)" in markdown
    assert "vs the baseline's" not in markdown  # the baseline itself was selected: nothing to compare
    other = render_markdown([basket | {"selected": "ease"}], tmp_path / "bench")
    assert "buy_again (baseline)" in other and "0.2000 vs the baseline's 0.3000 (-33.3%)" in other


def test_main_writes_page_and_plots(tmp_path: Path, msr: dict[str, Any], basket: dict[str, Any]) -> None:
    paths = []
    for name, document in (("a.json", msr), ("b.json", basket)):
        paths.append(tmp_path / name)
        paths[-1].write_text(json.dumps(document))
    out = tmp_path / "docs" / "benchmarks.md"
    assert main([str(out), *map(str, paths)]) == 0
    markdown = out.read_text()
    assert markdown.index("MovieLens-100k") < markdown.index("Instacart")
    for png in ("ml-100k-msr.png", "instacart-next-basket.png"):
        assert f"](bench/{png})" in markdown
        assert (tmp_path / "docs" / "bench" / png).read_bytes()[:8] == PNG_SIGNATURE


def test_not_a_benchmark_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"dataset": "x"}))
    with pytest.raises(ValueError, match="missing protocol"):
        write_report([bad], tmp_path / "out.md")
