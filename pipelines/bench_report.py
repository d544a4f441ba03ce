"""Render benchmark JSON documents (written by `fusionrec bench`) into `docs/benchmarks.md`: per dataset and
protocol, a table of our models beside the published numbers for that protocol, the selection's confidence
interval, time and memory, and a bar chart of nDCG@10 (ours vs published).

Usage: ``python -m pipelines.bench_report OUT.md BENCH.json...`` (or ``fusionrec bench-report``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Published:
    """One published result: ``metrics`` keyed like ours (``ndcg@10``)."""

    dataset: str
    protocol: str
    model: str
    metrics: dict[str, float]
    source: str


MS_RECOMMENDERS = "Microsoft Recommenders' benchmark notebook (2022)"
RECBOLE = "RecBole's benchmark tables"

# The published numbers we compare against, in one place (from the project's evaluation protocol notes).
PUBLISHED: tuple[Published, ...] = (
    Published(
        "ml-100k",
        "msr",
        "BiVAE",
        {"ndcg@10": 0.4751, "precision@10": 0.4118, "recall@10": 0.2191, "map@10": 0.1461},
        MS_RECOMMENDERS,
    ),
    *(
        Published("ml-100k", "msr", model, {"ndcg@10": ndcg}, MS_RECOMMENDERS)
        for model, ndcg in (
            ("BPR", 0.4420),
            ("LightGCN", 0.4176),
            ("NCF", 0.3988),
            ("SAR", 0.3883),
            ("SVD", 0.0959),
            ("ALS", 0.0466),
        )
    ),
    *(
        Published("ml-1m", "temporal", model, {"ndcg@10": ndcg}, RECBOLE)
        for model, ndcg in (
            ("ADMMSLIM", 0.2904),
            ("EASE", 0.2865),
            ("LightGCN", 0.2476),
            ("NeuMF", 0.2393),
            ("ItemKNN", 0.2389),
            ("Pop", 0.1006),
        )
    ),
)

PROTOCOLS = {
    "msr": "random stratified split by item, 75/25 (Microsoft Recommenders' protocol), seen items removed",
    "temporal": "temporal per user, 80/10/10, full ranking, seen items removed",
    "next-basket": "next basket: each user's last order is the test, repeats allowed (bought items not removed)",
}

# Protocols with no published numbers: our own baseline to beat.
BASELINES = {"next-basket": "buy_again"}

DATASET_NAMES = {"ml-100k": "MovieLens-100k", "ml-1m": "MovieLens-1M", "instacart": "Instacart"}

# Result columns in display order: (key template, header, format); a column shows when any result has it.
COLUMNS = (
    ("ndcg@{k}", "nDCG@{k}", "{:.4f}"),
    ("precision@{k}", "P@{k}", "{:.4f}"),
    ("recall@{k}", "R@{k}", "{:.4f}"),
    ("map@{k}", "MAP@{k}", "{:.4f}"),
    ("hit@{k}", "Hit@{k}", "{:.4f}"),
    ("mrr@{k}", "MRR@{k}", "{:.4f}"),
    ("coverage", "Coverage", "{:.3f}"),
    ("diversity", "Diversity", "{:.3f}"),
    ("novelty", "Novelty (bits)", "{:.2f}"),
    ("train_seconds", "Train s", "{:.1f}"),
    ("peak_rss_mb", "Peak RSS MB", "{:.0f}"),
)
PUBLISHED_COLUMNS = COLUMNS[:4]
REQUIRED_KEYS = ("dataset", "protocol", "k", "results", "selected")


def dataset_name(dataset: str) -> str:
    return DATASET_NAMES.get(dataset, dataset)


def published_for(benchmark: dict[str, Any]) -> list[Published]:
    """Published results for the benchmark's protocol (any dataset: the caller labels a different one), plus
    any the benchmark document carries under ``published`` (a list of {model, metrics..., source, dataset})."""
    rows = [p for p in PUBLISHED if p.protocol == benchmark["protocol"]]
    for extra in benchmark.get("published") or []:
        metrics = {key: value for key, value in extra.items() if isinstance(value, int | float)}
        rows.append(
            Published(
                extra.get("dataset", benchmark["dataset"]),
                benchmark["protocol"],
                extra["model"],
                metrics,
                extra.get("source", "benchmark document"),
            )
        )
    return rows


def _cell(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return fmt.format(value)


def _name(text: str) -> str:
    return str(text).replace("|", r"\|")


def _table(header: list[str], rows: list[list[str]], text_columns: int = 1) -> list[str]:
    """A Markdown table; the first ``text_columns`` left-aligned, the numbers right-aligned."""
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i < text_columns else "---:" for i in range(len(header))) + "|",
    ]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def results_table(benchmark: dict[str, Any]) -> list[str]:
    """Our models sorted by nDCG@k, the selected one in bold, the protocol's baseline marked."""
    k, results = benchmark["k"], benchmark["results"]
    ndcg = f"ndcg@{k}"
    columns = [
        (key.format(k=k), header.format(k=k), fmt)
        for key, header, fmt in COLUMNS
        if any(key.format(k=k) in r for r in results)
    ]
    has_kind = any("kind" in r for r in results)
    baseline = BASELINES.get(benchmark["protocol"])
    rows = []
    for result in sorted(results, key=lambda r: -r.get(ndcg, -math.inf)):
        name = _name(result["model"])
        if result["model"] == benchmark["selected"]:
            name = f"**{name}** (selected)"
        elif result["model"] == baseline:
            name = f"{name} (baseline)"
        row = [name] + ([result.get("kind", "")] if has_kind else [])
        rows.append(row + [_cell(result.get(key), fmt) for key, _, fmt in columns])
    header = ["Model"] + (["Kind"] if has_kind else []) + [header for _, header, _ in columns]
    return _table(header, rows, text_columns=2 if has_kind else 1)


def published_section(benchmark: dict[str, Any], published: list[Published]) -> list[str]:
    """The published table for this protocol, labelled with its source and dataset, or the baseline note."""
    protocol, ours = benchmark["protocol"], benchmark["dataset"]
    if not published:
        baseline = BASELINES.get(protocol)
        if baseline is None:
            return ["No published numbers for this protocol."]
        return [
            f"No published numbers for this protocol. The baseline to beat is our own `{baseline}` "
            "(each user's most frequently bought items), marked *(baseline)* in the table above."
        ]
    lines = []
    for source in dict.fromkeys(p.source for p in published):
        group = [p for p in published if p.source == source]
        dataset = group[0].dataset
        title = f"Published: {source} ({dataset_name(dataset)})"
        if dataset != ours:
            title += (
                f" — **a different dataset from ours ({dataset_name(ours)}), and its own preprocessing and "
                "split: indicative only, not directly comparable**"
            )
        columns = [
            (key.format(k=10), header.format(k=10), fmt)
            for key, header, fmt in PUBLISHED_COLUMNS
            if any(key.format(k=10) in p.metrics for p in group)
        ]
        rows = [
            [_name(p.model)] + [_cell(p.metrics.get(key), fmt) for key, _, fmt in columns]
            for p in sorted(group, key=lambda p: -p.metrics.get("ndcg@10", -math.inf))
        ]
        lines += [title, "", *_table(["Model", *[h for _, h, _ in columns]], rows), ""]
    return lines[:-1]


def comparison_sentence(benchmark: dict[str, Any], published: list[Published]) -> str | None:
    """How the selected model's nDCG@k stands against the best published one or the protocol's baseline."""
    k = benchmark["k"]
    by_model = {r["model"]: r for r in benchmark["results"]}
    selected = by_model.get(benchmark["selected"], {}).get(f"ndcg@{k}")
    if selected is None:
        return None
    scored = [p for p in published if "ndcg@10" in p.metrics]
    if scored:
        best = max(scored, key=lambda p: p.metrics["ndcg@10"])
        return (
            f"Selected `{benchmark['selected']}`: nDCG@{k} {selected:.4f}; best published: {best.model} "
            f"{best.metrics['ndcg@10']:.4f} ({dataset_name(best.dataset)}"
            f"{'' if best.dataset == benchmark['dataset'] else ', a different dataset'})."
        )
    baseline_name = BASELINES.get(benchmark["protocol"])
    baseline = by_model.get(baseline_name, {}).get(f"ndcg@{k}")
    if baseline and baseline_name != benchmark["selected"]:
        return (
            f"Selected `{benchmark['selected']}`: nDCG@{k} {selected:.4f} vs the baseline's {baseline:.4f} "
            f"({(selected / baseline - 1) * 100:+.1f}%)."
        )
    return None


def interval_sentence(benchmark: dict[str, Any]) -> str:
    """The paired bootstrap confidence interval of the selection, in words."""
    ci = benchmark.get("confidence_interval")
    if not ci:
        return (
            f"The selected model `{benchmark['selected']}` is a single model, so there is no fusion-versus-"
            "single-model interval."
        )
    level = round(100 * ci.get("confidence", 0.95))
    sentence = (
        f"Selected `{benchmark['selected']}` minus the best single model `{ci['versus']}` on test "
        f"{ci['metric']}: {ci['difference']:+.4f}, {level}% paired-bootstrap CI "
        f"[{ci['low']:+.4f}, {ci['high']:+.4f}]"
    )
    if "p_value" in ci:
        sentence += f"; share of resamples with no gain: {ci['p_value']:.3f}"
    verdict = "above zero" if ci["low"] > 0 else "includes zero" if ci["high"] >= 0 else "below zero"
    return f"{sentence} (interval {verdict})."


def cost_sentence(benchmark: dict[str, Any]) -> str:
    """Total time and memory of the benchmark run, and its size."""
    parts = []
    if "seconds" in benchmark:
        parts.append(f"whole run {benchmark['seconds']:.0f} s")
    if "peak_rss_mb" in benchmark:
        parts.append(f"peak RSS {benchmark['peak_rss_mb']:.0f} MB")
    if "test_users" in benchmark:
        parts.append(f"{benchmark['test_users']} test users")
    if "n_trials" in benchmark:
        parts.append(f"{benchmark['n_trials']} Optuna trials per model")
    return "Cost: " + ", ".join(parts) + "." if parts else ""


SELECTED_COLOUR, OURS_COLOUR, PUBLISHED_COLOUR = "#1f4e79", "#5b9bd5", "#a6a6a6"


def plot_benchmark(benchmark: dict[str, Any], published: list[Published], path: Path) -> Path:
    """Horizontal bar chart of nDCG@k: ours (selected darkest) and published (grey, dataset in the label)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    k, ours = benchmark["k"], benchmark["dataset"]
    bars = [
        (r["model"], r[f"ndcg@{k}"], SELECTED_COLOUR if r["model"] == benchmark["selected"] else OURS_COLOUR)
        for r in benchmark["results"]
        if r.get(f"ndcg@{k}") is not None
    ]
    bars += [
        (
            f"{p.model} (published{'' if p.dataset == ours else ', ' + dataset_name(p.dataset)})",
            p.metrics["ndcg@10"],
            PUBLISHED_COLOUR,
        )
        for p in published
        if "ndcg@10" in p.metrics
    ]
    bars.sort(key=lambda bar: bar[1])
    figure = Figure(figsize=(8, 1.4 + 0.32 * len(bars)), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.barh([b[0] for b in bars], [b[1] for b in bars], color=[b[2] for b in bars])
    for y, (_, value, _) in enumerate(bars):
        axes.text(value, y, f" {value:.3f}", va="center", fontsize=8)
    axes.set_xlabel(f"nDCG@{k} (ours) / nDCG@10 (published)" if k != 10 else "nDCG@10")
    axes.set_title(f"{dataset_name(ours)}, protocol {benchmark['protocol']}")
    axes.legend(
        handles=[Patch(color=SELECTED_COLOUR), Patch(color=OURS_COLOUR), Patch(color=PUBLISHED_COLOUR)],
        labels=["ours, selected", "ours", "published"],
        loc="lower right",
        fontsize=8,
    )
    axes.margins(x=0.15)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-")


def benchmark_section(benchmark: dict[str, Any], plot: Path, link: str) -> list[str]:
    """The Markdown section of one benchmark; writes its plot to ``plot``."""
    published = published_for(benchmark)
    plot_benchmark(benchmark, published, plot)
    protocol = benchmark["protocol"]
    lines = [
        f"## {dataset_name(benchmark['dataset'])} — protocol `{protocol}`",
        "",
        f"Protocol: {PROTOCOLS.get(protocol, protocol)}; top-{benchmark['k']} over all items.",
        "",
        f"### Our models (test split, sorted by nDCG@{benchmark['k']})",
        "",
        *results_table(benchmark),
        "",
        interval_sentence(benchmark),
        "",
    ]
    if cost := cost_sentence(benchmark):
        lines += [cost, ""]
    lines += ["### Published numbers", "", *published_section(benchmark, published), ""]
    if comparison := comparison_sentence(benchmark, published):
        lines += [comparison, ""]
    lines += [f"![nDCG: ours vs published, {benchmark['dataset']} {protocol}]({link})", ""]
    return lines


def render_markdown(
    benchmarks: list[dict[str, Any]], plot_dir: Path, markdown_dir: Path | None = None
) -> str:
    """The benchmarks page. Plots are written to ``plot_dir`` and linked relative to ``markdown_dir``
    (where the page will live; default ``plot_dir``'s parent)."""
    markdown_dir = plot_dir.parent if markdown_dir is None else markdown_dir
    lines = [
        "# Benchmarks",
        "",
        "Generated by `fusionrec bench-report` from `fusionrec bench` runs: the retrain pipeline's own stages "
        "(tuning on validation data carved from training only, the test split scored once). Metrics follow "
        "Microsoft Recommenders' definitions (binary relevance; MAP divides by the number of relevant items). "
        "Coverage: share of the catalogue in any top-k list. Diversity: mean share of item pairs in a list with "
        "different categories. Novelty: mean self-information −log2(popularity / users) of recommended items. "
        "Train s and peak RSS are per model (tuning excluded); the cost line is the whole run.",
        "",
    ]
    used: set[str] = set()
    for benchmark in benchmarks:
        stem = f"{_slug(benchmark['dataset'])}-{_slug(benchmark['protocol'])}"
        name, n = stem, 1
        while name in used:
            n += 1
            name = f"{stem}-{n}"
        used.add(name)
        plot = plot_dir / f"{name}.png"
        link = Path(os.path.relpath(plot, markdown_dir)).as_posix()
        lines += benchmark_section(benchmark, plot, link)
    return "\n".join(lines).rstrip() + "\n"


def load_benchmark(path: Path) -> dict[str, Any]:
    """Read one benchmark JSON, with a clear error when it is not one."""
    try:
        document = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: cannot read benchmark JSON ({error})") from error
    missing = [key for key in REQUIRED_KEYS if key not in document]
    if missing:
        raise ValueError(f"{path}: not a benchmark document, missing {', '.join(missing)}")
    return document


def write_report(paths: Sequence[Path], out: Path, plot_dir: Path | None = None) -> str:
    """Render the benchmark JSON files at ``paths`` to ``out``; plots go to ``plot_dir`` (default:
    ``bench/`` beside ``out``). Returns the Markdown."""
    benchmarks = [load_benchmark(Path(p)) for p in paths]
    plot_dir = out.parent / "bench" if plot_dir is None else plot_dir
    markdown = render_markdown(benchmarks, plot_dir, markdown_dir=out.parent)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown)
    return markdown


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.bench_report", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("out", type=Path, help="Markdown file to write, e.g. docs/benchmarks.md")
    parser.add_argument(
        "benchmarks", type=Path, nargs="+", help="benchmark JSON files from `fusionrec bench`"
    )
    parser.add_argument(
        "--plot-dir", type=Path, default=None, help="where the PNGs go (default: OUT's dir/bench)"
    )
    args = parser.parse_args(argv)
    try:
        write_report(args.benchmarks, args.out, args.plot_dir)
    except ValueError as error:
        parser.error(str(error))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
