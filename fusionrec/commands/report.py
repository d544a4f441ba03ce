"""`fusionrec report experiment`: CTR, CVR, order value and the funnel of each arm of an A/B test."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import click


@click.group("report")
def report() -> None:
    """Reports over what the deployment has recorded (feedback events of A/B experiments)."""


def _since(_: click.Context, __: click.Parameter, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an ISO date or time (2026-07-01, 2026-07-01T12:00Z)"
        ) from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


@report.command("experiment")
@click.option(
    "--since", callback=_since, default=None, help="Only events at or after this ISO time (UTC unless given)."
)
@click.option(
    "--experiment",
    "name",
    default=None,
    help="Experiment name: keeps its events when the store records experiment names; names the files.",
)
@click.option(
    "--reference",
    default=None,
    help='Arm the others are compared with (default: "popularity", else the first).',
)
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the plot here (default: <home>/reports/experiment/<experiment>.png).",
)
@click.option(
    "--resamples",
    type=click.IntRange(100, 100_000),
    default=2000,
    show_default=True,
    help="Bootstrap resamples.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the whole report as JSON.")
@click.pass_context
def experiment(
    ctx: click.Context,
    since: datetime | None,
    name: str | None,
    reference: str | None,
    plot_path: Path | None,
    resamples: int,
    as_json: bool,
) -> None:
    """Per arm: users, impressions, clicks, carts, purchases, revenue; CTR, CVR and click-to-purchase with
    Wilson 95% intervals; order value and revenue per user with t-intervals. For every other arm, its lift over
    the reference arm, absolute and relative, with a 95% bootstrap interval over users (the randomisation unit)
    and p-values (two-proportion z-test and a user-level z-test for rates, Welch's t-test for money).

    Reads the feedback events store (SQLite in the home, or PostgreSQL with FUSIONREC_EVENTS_URL) and writes
    a JSON report and a plot (CTR and CVR with error bars, the funnel) under <home>/reports/experiment/.
    """
    from fusionrec.cli import _call, _config
    from pipelines.experiment_report import experiment_report

    cfg = _config(ctx)
    result = _call(
        lambda c: experiment_report(
            c, since=since, experiment=name, reference=reference, plot_path=plot_path, resamples=resamples
        ),
        cfg,
    )
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2, sort_keys=True, default=str))
        return
    window = f"{result.first_event} .. {result.last_event}"
    click.echo(f"experiment {result.experiment or '(all arms)'}: {result.events} events, {window}")
    if result.events_without_arm:
        click.echo(f"({result.events_without_arm} events without an arm are not counted)")
    click.echo("")
    click.echo(result.markdown)
    click.echo("")
    click.echo(f"plot: {result.plot}")
    click.echo(f"report: {result.path}")
