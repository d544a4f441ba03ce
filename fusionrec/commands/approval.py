"""`fusionrec approve|reject [VERSION]` and `fusionrec compare [VERSION]`: a reviewer's decision on a
registered version, recorded on it in MLflow, and the challenger-vs-champion comparison it rests on.

Approving compares the version with the champion on the same holdout first (``pipelines/compare.py``): one
worse than the champion by more than the tolerance is refused (exit code 1) unless ``--force``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

# Imported from fusionrec.cli inside the commands: cli.py imports this module while it is being imported.
version_argument = click.argument("model_version", required=False)
json_flag = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
tolerance_option = click.option(
    "--tolerance",
    type=click.FloatRange(min=0),
    default=None,
    help="How much lower than the champion's nDCG@k the version may score and still be approved (0.01).",
)


def reviewer_options(command: Callable[..., Any]) -> Callable[..., Any]:
    command = click.option("--comment", default="", help="Why (recorded on the model version).")(command)
    return click.option("--by", required=True, help="Reviewer name, recorded on the model version.")(command)


@click.command("approve")
@version_argument
@reviewer_options
@click.option(
    "--force",
    is_flag=True,
    help="Approve even if the version is worse than the champion on the same holdout (recorded as forced).",
)
@tolerance_option
@json_flag
@click.pass_context
def approve(
    ctx: click.Context,
    model_version: str | None,
    by: str,
    comment: str,
    force: bool,
    tolerance: float | None,
    as_json: bool,
) -> None:
    """Approve MODEL_VERSION (default: the challenger): it becomes the `champion`.

    MODEL_VERSION is a number (3, v3) or an alias (challenger). The version is first compared with the champion
    on this run's test split; a version worse by more than the tolerance is refused unless --force.
    """
    from fusionrec.cli import _config, _run
    from pipelines.approve import approve as run_approve

    cfg = _config(ctx, approval_tolerance=tolerance)
    _run(lambda c: run_approve(c, model_version, by, comment, auto=False, force=force), cfg, as_json)


@click.command("reject")
@version_argument
@reviewer_options
@json_flag
@click.pass_context
def reject(ctx: click.Context, model_version: str | None, by: str, comment: str, as_json: bool) -> None:
    """Reject MODEL_VERSION (default: the challenger); the champion stays."""
    from fusionrec.cli import _config, _run
    from pipelines.approve import reject as run_reject

    _run(lambda c: run_reject(c, model_version, by, comment), _config(ctx), as_json)


@click.command("compare")
@version_argument
@tolerance_option
@json_flag
@click.pass_context
def compare(ctx: click.Context, model_version: str | None, tolerance: float | None, as_json: bool) -> None:
    """Score MODEL_VERSION (default: the challenger) and the champion on this run's test split, side by side;
    the result is also tagged on the version (`comparison`) for the approval."""
    from fusionrec.cli import _call, _config
    from pipelines.compare import compare as run_compare

    result = _call(lambda c: run_compare(c, model_version), _config(ctx, approval_tolerance=tolerance))
    payload = result.to_dict()
    click.echo(json.dumps(payload, indent=2, sort_keys=True) if as_json else comparison_table(payload))


def comparison_table(comparison: dict[str, Any]) -> str:
    """The comparison as a text table (metric, challenger, champion, difference) and its verdict."""
    champion = comparison["champion"] or {}
    difference = comparison["difference"] or {}
    title = f"v{comparison['challenger_version']}"
    title += f" vs champion v{comparison['champion_version']}" if comparison["champion_version"] else ""
    lines = [
        f"{title} on {comparison['test_users']} test users of {comparison['holdout']}",
        f"{'metric':<14}{'challenger':>12}{'champion':>12}{'difference':>12}",
    ]
    for metric, value in comparison["challenger"].items():
        theirs = f"{champion[metric]:>12.4f}" if metric in champion else f"{'-':>12}"
        diff = f"{difference[metric]:>+12.4f}" if metric in difference else f"{'-':>12}"
        lines.append(f"{metric:<14}{value:>12.4f}{theirs}{diff}")
    lines.append(
        f"verdict: {comparison['verdict']} ({comparison['metric']}, tolerance {comparison['tolerance']:g})"
    )
    if comparison["champion_cold_users"]:
        lines.append(
            f"{comparison['champion_cold_users']} test users unknown to the champion (popular items)"
        )
    return "\n".join(lines)
