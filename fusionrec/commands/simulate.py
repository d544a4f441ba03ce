"""`fusionrec simulate`: shoppers of a generated shop use the API and send their feedback back."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command("simulate")
@click.option(
    "--shop",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    required=True,
    help="Folder written by `fusionrec generate` (its truth/ drives the shoppers).",
)
@click.option(
    "--shoppers", type=click.IntRange(min=1), default=1000, show_default=True, help="Distinct shoppers."
)
@click.option(
    "--visits", type=click.IntRange(min=1), default=1, show_default=True, help="Visits per shopper."
)
@click.option("--url", default=None, help="The API's base URL, e.g. http://127.0.0.1:8000.")
@click.option(
    "--in-process", is_flag=True, help="Serve the API of --home inside this process instead of --url."
)
@click.option("--k", type=click.IntRange(1, 100), default=10, show_default=True, help="Items per request.")
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Same seed, same shoppers and reactions."
)
@click.option(
    "--batch", type=click.IntRange(1, 1000), default=500, show_default=True, help="Events per POST /events."
)
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bar on stderr.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def simulate(
    ctx: click.Context,
    shop: Path,
    shoppers: int,
    visits: int,
    url: str | None,
    in_process: bool,
    k: int,
    seed: int,
    batch: int,
    progress: bool,
    as_json: bool,
) -> None:
    """Close the loop: shoppers of a generated shop visit the API (GET /recommendations/{user}?k=K with the
    shop's raw user ids), see the recommendations of whatever arm the running experiment gives them, and click,
    cart and buy as their ground-truth tastes say (the generator's funnel, with a position bias). Impressions,
    clicks, carts and purchases (order value = price x quantity) go to POST /events in batches.

    Then `fusionrec report experiment --since STARTED_AT` compares the arms, and the next ingest (the DAG's
    next run) learns from the feedback.
    """
    from fusionrec.cli import UserError, _call, _config
    from pipelines.simulate import SimulateConfig, SimulationError, simulate_shoppers

    if bool(url) == in_process:
        raise click.UsageError("give exactly one of --url URL and --in-process")
    run_cfg = _config(ctx) if in_process else None
    cfg = SimulateConfig(shop=shop, shoppers=shoppers, visits=visits, k=k, seed=seed, batch=batch)

    def run(_: object) -> object:
        try:
            return simulate_shoppers(cfg, url=url, run_cfg=run_cfg, progress=progress)
        except SimulationError as exc:
            raise UserError(str(exc)) from exc

    result = _call(run, run_cfg)
    payload = result.to_dict()
    if as_json:
        click.echo(json.dumps(payload, indent=2, sort_keys=True, default=str))
        return
    click.echo(
        f"{result.visits} visits by {result.shoppers} shoppers in {result.seconds}s ({result.visits_per_second}/s), "
        f"{result.failed_visits} failed; {result.events_sent} events sent, {result.events_accepted} accepted"
    )
    click.echo(f"experiment: {', '.join(result.experiments) or '(none)'}; started at {result.started_at}")
    for arm, c in result.arms.items():
        click.echo(
            f"  {arm}: {c['visits']} visits, {c['impressions']} impressions, {c['clicks']} clicks, "
            f"{c['carts']} carts, {c['purchases']} purchases, revenue {c['revenue']:.2f}; "
            f"expected CTR {_pct(c['expected_ctr'])}, CVR {_pct(c['expected_cvr'])}"
        )
    for note in result.notes:
        click.echo(f"note: {note}")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"
