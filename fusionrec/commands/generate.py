"""`fusionrec generate`: a synthetic shop (events, catalogue, users, reviews) and the tastes behind it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click


@click.command("generate")
@click.option(
    "--users", type=click.IntRange(min=1), default=10_000, show_default=True, help="Number of users."
)
@click.option(
    "--items",
    type=click.IntRange(min=10),
    default=2_000,
    show_default=True,
    help="Catalogue size.",
)
@click.option(
    "--events",
    type=click.IntRange(min=0),
    default=1_000_000,
    show_default=True,
    help="Behaviour events (view/click/cart/purchase) to write, exactly.",
)
@click.option("--seed", type=int, default=42, show_default=True, help="Same seed and sizes, same files.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Output folder (the generator's own files there are replaced).",
)
@click.option(
    "--start", default=None, help="First day, YYYY-MM-DD (UTC). Default: the period ends with 2026-06-30."
)
@click.option(
    "--days", type=click.IntRange(min=1), default=180, show_default=True, help="Length of the period."
)
@click.option(
    "--chunk-events",
    type=click.IntRange(min=1000),
    default=500_000,
    show_default=True,
    help="About this many events per Parquet part (bounds memory).",
)
@click.option("--with-pii", is_flag=True, help="Add fake e-mail, phone, name and address columns to users.")
@click.option("--no-progress", is_flag=True, help="No progress bar on stderr.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def generate(
    users: int,
    items: int,
    events: int,
    seed: int,
    out: Path,
    start: str | None,
    days: int,
    chunk_events: int,
    with_pii: bool,
    no_progress: bool,
    as_json: bool,
) -> None:
    """Generate a synthetic shop in OUT: events/part-*.parquet (view -> click -> cart -> purchase, in
    sessions), items.parquet, users.parquet, reviews.parquet, the ground-truth tastes in truth/ (read them
    with pipelines.generate.load_truth) and manifest.json. Long-tail popularity, per-user category and brand
    tastes, price sensitivity, repeat purchases, daily and weekly rhythms, users and items arriving over time.
    """
    from pipelines.generate import GenerateConfig, GenerateError
    from pipelines.generate import generate as run_generate

    cfg = GenerateConfig(
        users=users,
        items=items,
        events=events,
        seed=seed,
        out=out,
        days=days,
        start=start,
        chunk_events=chunk_events,
        with_pii=with_pii,
    )
    try:
        result = run_generate(cfg, progress=not no_progress)
    except GenerateError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    payload = result.to_dict()
    if as_json:
        click.echo(json.dumps(payload, indent=2, sort_keys=True, default=str))
    else:
        for key, value in payload.items():
            click.echo(f"{key}: {json.dumps(value) if isinstance(value, dict) else value}")
