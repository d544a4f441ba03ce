"""`fusionrec bench capacity`: stage time and memory at several sizes, power-law fits and the projection to 1B
events / 100M users (pipelines/bench_capacity.py). Registered on the `bench` group:
``bench.add_command(capacity)``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

DEFAULT_SIZES = "200000,600000,2000000"


def _sizes(_: click.Context, __: click.Parameter, value: str) -> list[int]:
    from pipelines.bench_capacity import MIN_EVENTS

    try:
        sizes = sorted({int(v.replace("_", "")) for v in value.split(",") if v.strip()})
    except ValueError:
        raise click.BadParameter(
            f"{value!r}: use comma-separated event counts, e.g. {DEFAULT_SIZES}"
        ) from None
    if len(sizes) < 2 or sizes[0] < MIN_EVENTS:
        raise click.BadParameter(f"need at least two distinct sizes of >= {MIN_EVENTS} events")
    return sizes


@click.command("capacity")
@click.option(
    "--sizes",
    default=DEFAULT_SIZES,
    show_default=True,
    callback=_sizes,
    help="Event counts to measure (users 1 per 100 events, items 1 per 200).",
)
@click.option(
    "--online-store", type=click.Choice(["sqlite", "redis"]), default=None, help="Feast online store."
)
@click.option(
    "--serving-store",
    type=click.Choice(["sqlite", "redis"]),
    default=None,
    help="Serving store published to.",
)
@click.option("--redis-url", default=None, help="Redis of both stores (default: the run's redis_url).")
@click.option("--seed", type=int, default=42, show_default=True)
@click.option(
    "--workdir", type=click.Path(file_okay=False), help="Scratch folder (default: HOME/bench/capacity)."
)
@click.option("--keep", is_flag=True, help="Keep each size's shop and scratch home.")
@click.option(
    "--in-process",
    is_flag=True,
    help="Run the stages in this process (quicker; peak RSS is then sampled and includes earlier stages').",
)
@click.option(
    "--stage-timeout",
    type=click.FloatRange(min=1),
    default=3600.0,
    show_default=True,
    help="Seconds before a stage process is stopped.",
)
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the figures as JSON here.")
@click.option(
    "--plot", "plot_out", type=click.Path(dir_okay=False), help="Write the log-log plot (PNG) here."
)
@click.option(
    "--markdown", "markdown_out", type=click.Path(dir_okay=False), help="Write the tables as Markdown here."
)
@click.pass_context
def capacity(
    ctx: click.Context,
    sizes: list[int],
    online_store: str | None,
    serving_store: str | None,
    redis_url: str | None,
    seed: int,
    workdir: str | None,
    keep: bool,
    in_process: bool,
    stage_timeout: float,
    json_out: str | None,
    plot_out: str | None,
    markdown_out: str | None,
) -> None:
    """Measure how the pipeline's cost grows: for each size, generate a shop and run ingest, validate (GX),
    split, features (Feast build + materialize), the train input, one fit each of EASE, ItemKNN and iALS,
    top-N for all users, the serving context and the serving-store publish, each stage in its own process
    (wall time, CPU time, peak RSS). Fits time and memory per stage as a * n^b against its driver (events,
    users, items, ...), projects them to 1B events / 100M users / 10M and 1M items, and says which stage
    breaks a one-node limit (24 GB RAM, 24 h) first and which engine takes over."""
    from fusionrec.cli import _config
    from pipelines.bench_capacity import CapacityBenchError, bench_capacity

    cfg = _config(ctx.find_root(), redis_url=redis_url)
    folder = Path(workdir) if workdir else cfg.home / "bench" / "capacity"
    try:
        document = bench_capacity(
            sizes,
            folder,
            json_out=Path(json_out) if json_out else None,
            plot_out=Path(plot_out) if plot_out else None,
            isolate=not in_process,
            seed=seed,
            online_store=online_store or cfg.online_store,
            serving_store=serving_store or cfg.serving_store,
            redis_url=cfg.redis_url,
            offline_store=cfg.offline_store,
            keep=keep,
            timeout=stage_timeout,
        )
    except CapacityBenchError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    if markdown_out:
        Path(markdown_out).write_text(capacity_tables(document, markdown=True) + "\n")
    click.echo(capacity_tables(document))


# --- tables ------------------------------------------------------------------------------------------------


def duration(seconds: float) -> str:
    for unit, size, limit in (("s", 1, 120), ("min", 60, 7200), ("h", 3600, 172_800), ("d", 86_400, 3e7)):
        if seconds < limit:
            return f"{seconds / size:.1f} {unit}" if seconds < 100 * size else f"{seconds / size:.0f} {unit}"
    return f"{seconds / 31_536_000:.1f} y"


def megabytes(mb: float) -> str:
    if mb < 1024:
        return f"{mb:.0f} MB"
    if mb < 1024**2:
        return f"{mb / 1024:.1f} GB"
    return f"{mb / 1024**2:.1f} TB"


def count(n: float | None) -> str:
    if n is None:
        return "-"
    for suffix, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            value = n / size
            return f"{value:.0f}{suffix}" if value >= 10 or value == int(value) else f"{value:.1f}{suffix}"
    return f"{n:.0f}"


def _render(header: list[str], rows: list[list[str]], markdown: bool) -> list[str]:
    if markdown:
        return [
            "| " + " | ".join(header) + " |",
            "|" + "|".join("---" for _ in header) + "|",
            *("| " + " | ".join(row) + " |" for row in rows),
        ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join
    return [
        line(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in [header, *rows]
    ]


def measured_rows(document: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Per stage and size: wall time, CPU time and peak RSS; last, how CPU time and peak RSS grew from the
    smallest size to the largest."""
    sizes = document["sizes"]
    header = ["stage"] + [
        f"{count(s['events'])} ev ({count(s['users'])} u / {count(s['items'])} i)" for s in sizes
    ]
    header.append(f"x{sizes[-1]['events'] / sizes[0]['events']:.0f} events: CPU / memory")
    rows = []
    for name, label in document["stages"].items():
        runs = [s["stages"][name] for s in sizes]
        cells = [
            f"{duration(r['seconds'])} (cpu {duration(r['cpu_seconds'])}), {megabytes(r['peak_rss_mb'])}"
            for r in runs
        ]
        first, last = runs[0], runs[-1]
        time_growth = last["cpu_seconds"] / first["cpu_seconds"] if first["cpu_seconds"] > 0 else float("inf")
        memory_growth = last["peak_rss_mb"] / first["peak_rss_mb"] if first["peak_rss_mb"] else float("inf")
        rows.append([label, *cells, f"x{time_growth:.1f} / x{memory_growth:.1f}"])
    store = [s["stages"]["publish"]["extra"].get("store_mb", 0.0) for s in sizes]
    rows.append(
        ["serving store size", *(megabytes(v) for v in store), f"- / x{store[-1] / max(store[0], 1e-9):.1f}"]
    )
    loads = [max(r["load_average"] for r in s["stages"].values()) for s in sizes]
    rows.append(["(max 1-min load average)", *(f"{v:.1f}" for v in loads), ""])
    return header, rows


def fit_rows(document: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["stage", "time driver", "b wall", "b CPU (R²)", "theory", "memory driver", "b (R²)", "theory"]
    rows = []
    for name, label in [*document["stages"].items(), ("store", "serving store size")]:
        fits = document["fits"][name]
        row = [label]
        if "cpu" in fits:
            wall, cpu = fits["time"], fits["cpu"]
            row += [
                wall["driver"],
                f"{wall['b']:.2f}",
                f"{cpu['b']:.2f} ({cpu['r2']:.2f})",
                f"{cpu['theory_b']:g}",
            ]
        else:
            row += ["-"] * 4
        memory = fits["memory"]
        row += [memory["driver"], f"{memory['b']:.2f} ({memory['r2']:.2f})", f"{memory['theory_b']:g}"]
        rows.append(row)
    return header, rows


def projection_rows(projection: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = [
        "stage",
        "wall",
        "CPU: fitted / complexity",
        "memory: fitted / complexity",
        "over (fitted)",
        "breaks at",
    ]
    rows = []
    for name, row in projection["stages"].items():
        breaks = row["breaks_at_events"]
        found = [(breaks[f"{w}_fitted"], w) for w in ("cpu", "memory") if breaks[f"{w}_fitted"] is not None]
        first = f"{count(min(found)[0])} events ({min(found)[1]})" if found else "-"
        over = ", ".join(row["over"]) or "ok"
        if row["may_break"]:
            over += f"; by complexity: {', '.join(row['may_break'])}"
        rows.append(
            [
                name,
                duration(row["seconds"]),
                f"{duration(row['cpu_seconds'])} / {duration(row['cpu_seconds_theory'])}",
                f"{megabytes(row['memory_mb'])} / {megabytes(row['memory_mb_theory'])}",
                over,
                first,
            ]
        )
    return header, rows


def capacity_tables(document: dict[str, Any], markdown: bool = False) -> str:
    """The measured figures, the fitted exponents and each projection, as aligned text or Markdown."""
    ratios, stores, machine = document["ratios"], document["stores"], document["machine"]
    lines = [
        f"{len(document['sizes'])} sizes; 1 user per {1 / ratios['users_per_event']:.0f} events, 1 item per "
        f"{1 / ratios['items_per_event']:.0f}; Feast offline store {stores.get('offline_store', 'file')}, "
        f"online store {stores['online_store']}; serving store {stores['serving_store']}; "
        f"{machine['cpus']} CPUs, {machine['memory_gb']} GB; 1-min load average "
        f"{machine['load_average'][0]} at the start, {machine['load_average_at_end'][0]} at the end "
        "(other work on the cores inflates wall times; CPU times less so); "
        f"{duration(document['wall_seconds'])} in all",
        "",
        "Measured: wall time (CPU time of the stage's process), peak RSS of the stage's own process",
    ]
    lines += _render(*measured_rows(document), markdown)
    lines += ["", "Fitted: y = a * driver^b (time in s; memory in MB above the process's RSS after imports)"]
    lines += _render(*fit_rows(document), markdown)
    for projection in document["projections"]:
        lines += [
            "",
            f"Projection to {count(projection['events'])} events, {count(projection['users'])} users, "
            f"{count(projection['items'])} items on this machine: wall (fitted, under the measured load), "
            "CPU time and memory, each fitted / by complexity (the algorithm's exponent from the largest "
            "size). Limits of one node: 24 h of CPU time, 24 GB. 'breaks at': the fewest events on the way "
            "there (users and items per event as in the target) at which the fitted projection crosses one",
        ]
        lines += _render(*projection_rows(projection), markdown)
        store, first, total = projection["store"], projection["first_break"], projection["pipeline"]
        lines.append(
            f"whole pipeline: {duration(total['cpu_seconds'])} CPU fitted, "
            f"{duration(total['cpu_seconds_theory'])} by complexity ({duration(total['seconds'])} wall "
            f"fitted); serving store {megabytes(store['memory_mb'])} -> {store['shards']} Redis shard(s) "
            "of 24 GB"
        )
        for kind, found in first.items():
            if found:
                lines.append(
                    f"breaks first ({'fitted' if kind == 'fitted' else 'fitted or by complexity'}): "
                    f"{found['stage']} ({found['resource']}) at {count(found['events'])} events -> "
                    f"{projection['stages'][found['stage']]['takeover']}"
                )
    return "\n".join(lines)
