"""`fusionrec lineage MODEL_VERSION`: model version -> MLflow run -> DVC data hash -> GX result -> git commit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

ARROW = "    │\n    ▼"


@click.command("lineage")
@click.argument("model_version")
@click.option("--json", "as_json", is_flag=True, help="Print the lineage as JSON.")
@click.option(
    "--checkout",
    "checkout_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Also check out the version's exact validated (and quarantine) data with DVC into this folder "
    "(new, empty, or an earlier checkout).",
)
@click.pass_context
def lineage(ctx: click.Context, model_version: str, as_json: bool, checkout_dir: str | None) -> None:
    """Where MODEL_VERSION came from: the MLflow run that logged it, its training run, the DVC hash of its
    data, the GX validation result and the git commit.

    MODEL_VERSION is a number (3, v3) or an alias (champion, challenger, @champion). With --checkout DIR,
    DVC materializes that exact data in DIR (from the cache, or the remote) and its hash is checked.
    """
    from fusionrec.cli import _call, _config
    from pipelines.lineage import checkout, lineage

    cfg = _config(ctx)
    found = _call(lambda c: lineage(c, model_version), cfg)
    payload = found.to_dict()
    if checkout_dir is not None:
        payload["checkout"] = str(_call(lambda c: checkout(c, found, Path(checkout_dir)), cfg))
    if as_json:
        click.echo(json.dumps(payload, indent=2, sort_keys=True, default=str))
    else:
        click.echo(lineage_text(payload))


def lineage_text(lin: dict[str, Any]) -> str:
    """The chain as blocks joined by arrows, one block per link."""
    blocks = [
        _model_block(lin["model"]),
        _run_block("mlflow run", lin["registered_by"], "logged the model"),
        _run_block("train run", lin["trained_by"], f"found by {lin['train_run_found_by'] or '-'}"),
        _data_block(lin["data"]),
        _validation_block(lin["validation"]),
        _code_block(lin["code"]),
    ]
    text = f"\n{ARROW}\n".join("\n".join(block) for block in blocks)
    if lin.get("checkout"):
        text += f"\n\nchecked out: {lin['checkout']}"
    if lin["warnings"]:
        text += "\n\n" + "\n".join(f"warning: {w}" for w in lin["warnings"])
    return text


def _line(label: str, text: str) -> str:
    return f"{label:<12}{text}"


def _more(text: str) -> str:
    return _line("", text)


def _model_block(model: dict[str, Any]) -> list[str]:
    approval = model["approval"]
    ndcg = {k: v for k, v in model["test_metrics"].items() if k.startswith("ndcg")}
    return [
        _line(
            "model",
            f"{model['name']} v{model['version']}  aliases: {', '.join(model['aliases']) or '-'}"
            f"  selected: {model['selected'] or '-'}",
        ),
        _more(
            f"approval: {approval.get('status', '-')}"
            + (f" by {approval['by']} at {approval.get('at', '')}" if approval.get("by") else "")
            + f"  test: {_metrics(ndcg)}"
        ),
    ]


def _run_block(label: str, run: dict[str, Any] | None, how: str) -> list[str]:
    if run is None:
        return [_line(label, "not found")]
    tags = "  ".join(f"{k}={v}" for k, v in run["tags"].items())
    params = "  ".join(f"{k}={v}" for k, v in sorted(run["params"].items()) if "." not in k)
    key_metrics = {k: v for k, v in run["metrics"].items() if "ndcg" in k}
    lines = [
        _line(label, f"{run['run_id']}  {run['name']}  ({how})"),
        _more(f"experiment {run['experiment']}, started {run['started']}"),
        _more(tags),
    ]
    lines += [_more(f"params: {params}")] if params else []
    lines += [_more(f"metrics: {_metrics(key_metrics)}")] if key_metrics else []
    return lines


def _data_block(data: dict[str, Any]) -> list[str]:
    where = [name for name, held in (("cache", data["in_cache"]), ("remote", data["in_remote"])) if held]
    lines = [
        _line("dvc data", f"validated {data['md5'] or '-'}  quarantine {data['quarantine_md5'] or '-'}"),
        _more(f"repo {data['dvc_repo'] or '-'}  remote {data['remote'] or '-'}"),
        _more(f"held in: {', '.join(where) or 'nowhere'}"),
    ]
    lines += [_more(f"{path}  {md5}") for path, md5 in sorted(data["files"].items())]
    return lines


def _validation_block(gx: dict[str, Any]) -> list[str]:
    if not gx["found"]:
        return [_line("gx result", f"{gx['gx_result'] or '(not recorded)'}  (not found)")]
    rows = "  ".join(f"{t} {gx['accepted'][t]}/{gx['rejected'].get(t, 0)}" for t in gx["accepted"])
    return [
        _line("gx result", f"{'success' if gx['success'] else 'FAILED'}  run {gx['run']}"),
        _more(f"accepted/rejected rows: {rows}"),
        _more(gx["gx_result"]),
        _more(f"data docs {gx['data_docs']}"),
    ]


def _code_block(code: dict[str, Any]) -> list[str]:
    state = "dirty working tree" if code["dirty"] else "clean working tree"
    known = "in this repository" if code["in_repo"] else "not in this repository"
    return [_line("git commit", f"{code['commit']}  ({state}, {known})")]


def _metrics(values: dict[str, float]) -> str:
    return "  ".join(f"{k}={v:.4f}" for k, v in sorted(values.items())) or "-"
