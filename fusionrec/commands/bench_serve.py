"""`fusionrec bench serve`: latency of /recommendations under open-loop load, beside the thin baseline and a raw
Redis GET (pipelines/bench_serve.py). Registered on the `bench` group: ``bench.add_command(serve)``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from pipelines.bench_serve import DEFAULT_QUERY  # a light import: numpy and asyncio load when the bench runs


@click.command("serve")
@click.option(
    "--requests",
    type=click.IntRange(min=1),
    default=10_000,
    show_default=True,
    help="Recorded requests per phase and round (after the warm-up).",
)
@click.option(
    "--rate", type=click.FloatRange(min=1.0), default=500.0, show_default=True, help="Arrivals per second."
)
@click.option(
    "--warmup", type=click.IntRange(min=0), default=500, show_default=True, help="Unrecorded requests first."
)
@click.option(
    "--rounds",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Each phase runs this many times, alternating order; figures are the medians.",
)
@click.option(
    "--query",
    default=DEFAULT_QUERY,
    show_default=True,
    help="Query string of our GET /recommendations/{user} (filters, diversity, explanations).",
)
@click.option(
    "--users", type=click.IntRange(min=1), default=10_000, show_default=True, help="Users published."
)
@click.option(
    "--items", type=click.IntRange(min=100), default=5_000, show_default=True, help="Catalogue size."
)
@click.option(
    "--connections",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="Keep-alive connections of the load generator.",
)
@click.option(
    "--redis-url", default=None, help="Redis for the store and the baseline (default: the run's redis_url)."
)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--baseline-only", is_flag=True, help="Measure only the thin baseline and Redis, not our app.")
@click.option(
    "--json", "json_out", type=click.Path(dir_okay=False), help="Also write the figures as JSON here."
)
@click.pass_context
def serve(
    ctx: click.Context,
    requests: int,
    rate: float,
    warmup: int,
    rounds: int,
    query: str,
    users: int,
    items: int,
    connections: int,
    redis_url: str | None,
    seed: int,
    baseline_only: bool,
    json_out: str | None,
) -> None:
    """Benchmark the serving API: open-loop GETs at --rate on loopback against a Redis-backed store holding
    --users x 100 synthetic recommendations, then the same schedule against the thinnest FastAPI endpoint (one
    Redis GET of a pre-serialized top-100 list; async and sync redis-py, the faster is the baseline) and a raw
    Redis GET. Prints p50/p95/p99/max of each and ours/baseline ratios, with PASS/FAIL for the target (p99 <=
    1.5 x the baseline's p99 and <= 5 ms). Exits 1 if any request failed; a missed target does not fail.
    Everything it writes (scratch home, Redis keys) is removed at the end."""
    from fusionrec.cli import _call, _config
    from pipelines.bench_serve import BenchServeError, bench_serve
    from pipelines.uvicorn_servers import ServerStartError

    cfg = _config(ctx.find_root(), redis_url=redis_url)

    def run(c: Any) -> Any:
        return bench_serve(
            c,
            requests,
            rate,
            warmup=warmup,
            rounds=rounds,
            users=users,
            items=items,
            query=query,
            connections=connections,
            seed=seed,
            include_ours=not baseline_only,
            json_out=Path(json_out) if json_out else None,
        )

    try:
        result = _call(run, cfg)
    except (BenchServeError, ServerStartError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    click.echo(serve_table(result.to_dict()))
    if result.errors:
        sys.exit(1)


def serve_table(document: dict[str, Any]) -> str:
    """The figures as a table, then the ratios and the verdict."""
    lines = [
        f"{document['requests']:,} requests x {document['rounds']} rounds per phase at {document['rate']:g}/s "
        f"open-loop (+{document['warmup']} warm-up), {document['users']:,} users, {document['connections']} "
        f"connections; medians of rounds, ms from the scheduled send time",
        f"{'phase':<15} {'p50':>8} {'p95':>8} {'p99':>8} {'max':>8} {'errors':>7} {'rate/s':>8} "
        f"{'server CPU':>10} {'bytes':>6}",
    ]
    for name, phase in document["phases"].items():
        lat, cpu = phase["latency"], phase["server_cpu_percent"]
        mark = " *" if name == document["baseline"] else ""
        lines.append(
            f"{name + mark:<15} {lat['p50_ms']:>8.3f} {lat['p95_ms']:>8.3f} {lat['p99_ms']:>8.3f} "
            f"{lat['max_ms']:>8.2f} {phase['errors']:>7} {phase['achieved_rate']:>8.1f} "
            f"{'-' if cpu is None else f'{cpu:.0f}%':>10} {phase['response_bytes']:>6}"
        )
    lines.append(f"* the baseline (lower p99 of the two variants); query: ?{document['query']}")
    machine = document.get("machine", {})
    if "load_average_at_start" in machine:
        lines.append(
            f"{machine['cpus']} CPUs, 1-min load average {machine['load_average_at_start'][0]:g} at the start, "
            f"{machine.get('load_average_at_end', ['?'])[0]} at the end (other work on the cores inflates all figures)"
        )
    if document["ratio_p99"] is not None:
        ours = document["phases"]["ours"]["latency"]["p99_ms"]
        verdict = "PASS" if document["passed"] else "FAIL"
        lines.append(
            f"ours / baseline: p50 x{document['ratio_p50']:.2f}, p99 x{document['ratio_p99']:.2f}  ->  "
            f"target p99 <= {document['target_ratio']:g} x baseline and <= {document['target_p99_ms']:g} ms "
            f"(ours {ours:.3f} ms): {verdict}"
        )
    if document["errors"]:
        lines.append(f"{document['errors']} requests failed, e.g.:")
        for phase in document["phases"].values():
            for example in [e for r in phase["rounds"] for e in r["error_examples"]][:3]:
                lines.append(f"  {phase['name']}: {example}")
    return "\n".join(lines)
