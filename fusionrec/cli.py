"""`fusionrec` — one command line over the same stage functions the Airflow DAG and dvc.yaml call."""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from fusionrec.config import PROFILES, ConfigError, RunConfig

RUN_FILE = "run.json"  # the last ingested run's settings, so later stages know the source and protocol
# Only what describes the data is remembered: deployment switches (stores, URIs) keep coming from env/options.
REMEMBERED = ("source", "protocol")


class UserError(Exception):
    """Raised for bad input; printed as one line with a non-zero exit."""


def _user_errors() -> tuple[type[BaseException], ...]:
    from pipelines.approve import ApprovalError
    from pipelines.datasets import DatasetNotInstalled
    from pipelines.drift import DataDriftError
    from pipelines.ingest import IngestError
    from pipelines.privacy import PrivacyError
    from pipelines.promote import PromotionError
    from pipelines.stage import StageInputError
    from pipelines.validate import DataValidationError
    from serving.store import ServingStoreError

    return (
        UserError,
        StageInputError,
        IngestError,
        DataValidationError,
        DatasetNotInstalled,
        DataDriftError,
        PrivacyError,
        ApprovalError,
        PromotionError,
        ServingStoreError,
        FileNotFoundError,
    )


def _config(ctx: click.Context, **overrides: Any) -> RunConfig:
    """Saved run settings (from the last ingest) < global options < this command's options."""
    home = Path(ctx.obj["home"]).resolve()
    saved: dict[str, Any] = {}
    if (home / RUN_FILE).exists():
        saved = {k: v for k, v in json.loads((home / RUN_FILE).read_text()).items() if k in REMEMBERED}
    merged = saved | {k: v for k, v in ctx.obj["globals"].items() if v is not None}
    merged |= {k: v for k, v in overrides.items() if v is not None}
    merged["home"] = home
    try:
        return RunConfig.from_env(**merged)
    except ConfigError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(2)


def _emit(result: Any, as_json: bool) -> None:
    payload = result.to_dict() if hasattr(result, "to_dict") else result
    if as_json:
        click.echo(json.dumps(payload, indent=2, sort_keys=True, default=str))
    else:
        for key, value in payload.items():
            click.echo(
                f"{key}: {json.dumps(value, default=str) if isinstance(value, dict | list) else value}"
            )


def _call(stage: Callable[[RunConfig], Any], cfg: RunConfig) -> Any:
    """Run ``stage``; bad input ends the command with one ``error:`` line and exit code 1."""
    try:
        # Libraries (Feast, DVC) print progress to stdout; keep stdout for the command's own answer (--json).
        with contextlib.redirect_stdout(sys.stderr):
            return stage(cfg)
    except _user_errors() as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


def _run(stage: Callable[[RunConfig], Any], cfg: RunConfig, as_json: bool = False) -> Any:
    result = _call(stage, cfg)
    _emit(result, as_json)
    return result


json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")


def _names(value: str | None) -> list[str] | None:
    """``"a, b"`` -> ``["a", "b"]``; ``""`` -> ``[]`` (e.g. no fusions); None stays None (the default)."""
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


def _budgets(values: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """``--budget two_tower=3 --budget ease=60s`` -> per-model trial and time budgets for RunConfig."""
    trials: dict[str, int] = {}
    seconds: dict[str, float] = {}
    for value in values:
        name, _, amount = value.partition("=")
        try:
            if amount.endswith("s"):
                seconds[name.strip()] = float(amount[:-1])
            else:
                trials[name.strip()] = int(amount)
        except ValueError:
            raise click.BadParameter(
                f"{value!r}: use NAME=TRIALS or NAME=SECONDSs", param_hint="--budget"
            ) from None
    return {"model_trials": trials or None, "model_seconds": seconds or None}


def zoo_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Which models and fusions a run trains and compares, and how much tuning each gets."""
    options = [
        click.option(
            "--models",
            default=None,
            help="Comma-separated single models (default: ease,itemknn,ials,two_tower).",
        ),
        click.option(
            "--fusions",
            default=None,
            help='Comma-separated fusions: blend,rrf,stacking (default all; "" none).',
        ),
        click.option("--n-trials", type=click.IntRange(min=1), default=None, help="Optuna trials per model."),
        click.option(
            "--budget", multiple=True, metavar="NAME=N|NAME=Ss", help="Per-model budget: trials or seconds."
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _zoo(models: str | None, fusions: str | None, n_trials: int | None, budget: tuple[str, ...]) -> dict:
    return {"models": _names(models), "fusions": _names(fusions), "n_trials": n_trials} | _budgets(budget)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home",
    envvar="FUSIONREC_HOME",
    default=".fusionrec",
    show_default=True,
    help="Folder holding this deployment's data, MLflow DB, feature store and serving store.",
)
@click.option(
    "--serving-store",
    type=click.Choice(["sqlite", "redis"]),
    default=None,
    help="Serving store backend (env FUSIONREC_SERVING_STORE).",
)
@click.option(
    "--online-store",
    type=click.Choice(["sqlite", "redis"]),
    default=None,
    help="Feast online store backend (env FUSIONREC_ONLINE_STORE).",
)
@click.option(
    "--profile",
    type=click.Choice(list(PROFILES)),
    default=None,
    help="Defaults for local (embedded SQLite) or production (PostgreSQL, Redis, MLflow server) "
    "(env FUSIONREC_PROFILE).",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="YAML file of run settings (env FUSIONREC_CONFIG): profile, stores, models, budgets...",
)
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.pass_context
def cli(
    ctx: click.Context,
    home: str,
    serving_store: str | None,
    online_store: str | None,
    profile: str | None,
    config_file: str | None,
    verbose: bool,
) -> None:
    """FusionRec: ingest, validate, version, featurize, train, fuse, register, approve, promote and serve."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("great_expectations", "feast", "mlflow", "alembic", "dvc", "urllib3", "fsspec", "py4j"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if config_file:
        os.environ["FUSIONREC_CONFIG"] = config_file  # read by RunConfig.from_env, here and in subprocesses
    ctx.obj = {
        "home": home,
        "globals": {"serving_store": serving_store, "online_store": online_store, "profile": profile},
    }


def source_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options that say where raw data comes from (a bundled dataset or files with a column mapping)."""
    path = click.Path(exists=False)
    options = [
        click.option(
            "--dataset",
            type=click.Choice(["ml-100k", "instacart"]),
            default=None,
            help="A bundled public dataset (default ml-100k when no file is given).",
        ),
        click.option(
            "--interactions",
            type=path,
            help="CSV/TSV/Parquet file, or a folder of them, of behaviour events.",
        ),
        click.option("--items", type=path, help="Optional item catalogue file."),
        click.option("--users", type=path, help="Optional users file."),
        click.option("--reviews", type=path, help="Optional reviews file."),
        click.option(
            "--shop",
            type=click.Path(exists=True, file_okay=False),
            help="A folder in the `fusionrec generate` layout (events/, items/users/reviews.parquet).",
        ),
        click.option("--user-col", default="user_id", show_default=True),
        click.option("--item-col", default="item_id", show_default=True),
        click.option("--rating-col", default="rating", show_default=True),
        click.option("--timestamp-col", default="timestamp", show_default=True),
        click.option("--event-col", default="event_type", show_default=True),
        click.option("--session-col", default="session_id", show_default=True),
        click.option("--price-col", default="price", show_default=True),
        click.option("--quantity-col", default="quantity", show_default=True),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _source(
    dataset: str | None, interactions: str | None, shop: str | None = None, **files_and_columns: Any
) -> dict[str, Any]:
    if shop:
        if dataset or interactions:
            raise click.UsageError("give one of --dataset, --interactions or --shop")
        from pipelines.ingest import shop_source

        layout = shop_source(Path(shop))
        interactions = layout.pop("interactions")
        files_and_columns |= {t: f for t, f in layout.items() if f and not files_and_columns.get(t)}
    if dataset and interactions:
        raise click.UsageError("give either --dataset or --interactions, not both")
    source = {"dataset": None if interactions else (dataset or "ml-100k"), "interactions": interactions}
    return source | files_and_columns


@cli.command()
@source_options
@click.option(
    "--validate/--no-validate",
    "gate",
    default=True,
    show_default=True,
    help="Run the validation gate (GX) after reading, so the answer counts every accepted and rejected row.",
)
@click.option("--max-reject-share", type=float, default=None, help="Fail above this share of rejected rows.")
@click.option(
    "--drift-action",
    type=click.Choice(["warn", "fail", "off"]),
    default=None,
    help="What a drift against the last accepted batch does (default warn).",
)
@click.option(
    "--drift-threshold", type=float, default=None, help="PSI above which a distribution drifted (0.2)."
)
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a terminal).")
@json_option
@click.pass_context
def ingest(
    ctx: click.Context,
    gate: bool,
    max_reject_share: float | None,
    drift_action: str | None,
    drift_threshold: float | None,
    progress: bool | None,
    as_json: bool,
    **source: Any,
) -> None:
    """Read a dataset, a file or a folder of files into canonical tables, then validate them.

    Prints accepted and rejected rows, the quarantine folder and the count of each rejection reason
    (with --json: {"accepted", "rejected", "quarantine", "reasons", ...}). Rows that cannot be read or fail
    a check go to the quarantine with their source file, row, original values and reason.
    """
    from pipelines.ingest import ingest as run_ingest

    cfg = _config(
        ctx,
        source=_source(**source),
        max_reject_share=max_reject_share,
        drift_action=drift_action,
        drift_threshold=drift_threshold,
    )
    read = _call(lambda c: run_ingest(c, progress=progress), cfg)
    remembered = {key: cfg.to_dict()[key] for key in REMEMBERED}
    (cfg.home / RUN_FILE).write_text(json.dumps(remembered, indent=2))
    if not gate:
        _emit(read, as_json)
        return
    from pipelines.validate import validate as run_validate

    checked = _call(run_validate, cfg)
    summary = gate_summary(checked)
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))
        return
    click.echo(
        f"accepted {summary['accepted']:,} rows, rejected {summary['rejected']:,} (quarantine: {summary['quarantine']})"
    )
    for reason, count in summary["reasons"].items():
        click.echo(f"  {count:>10,}  {reason}")
    click.echo(f"data docs: {summary['data_docs']}")


def gate_summary(result: Any) -> dict[str, Any]:
    """The answer of `ingest`: interactions accepted/rejected (= rows read), quarantine, reasons, per table."""
    tables = {
        t: {"read": result.rows_read[t], "accepted": result.accepted[t], "rejected": result.rejected[t]}
        for t in result.rows_read
    }
    return {
        "accepted": result.accepted["interactions"],
        "rejected": result.rejected["interactions"],
        "quarantine": result.quarantine,
        "reasons": result.reasons,
        "rows_read": result.rows_read["interactions"],
        "tables": tables,
        "data_docs": result.data_docs,
        "drift": result.drift.get("status"),
        "success": result.success,
    }


@cli.command()
@click.option("--max-reject-share", type=float, default=None, help="Fail above this share of rejected rows.")
@click.option("--drift-action", type=click.Choice(["warn", "fail", "off"]), default=None)
@click.option(
    "--drift-threshold", type=float, default=None, help="PSI above which a distribution drifted (0.2)."
)
@json_option
@click.pass_context
def validate(
    ctx: click.Context,
    max_reject_share: float | None,
    drift_action: str | None,
    drift_threshold: float | None,
    as_json: bool,
) -> None:
    """Validate canonical tables with Great Expectations; quarantine bad rows; check drift."""
    from pipelines.validate import validate as run_validate

    cfg = _config(
        ctx, max_reject_share=max_reject_share, drift_action=drift_action, drift_threshold=drift_threshold
    )
    _run(run_validate, cfg, as_json)


@cli.command()
@click.option(
    "--protocol",
    type=click.Choice(["msr", "temporal", "next-basket"]),
    default=None,
    help="Evaluation protocol (default: the dataset's).",
)
@json_option
@click.pass_context
def split(ctx: click.Context, protocol: str | None, as_json: bool) -> None:
    """Split into fit/valid/train/test by the evaluation protocol."""
    from pipelines.split import split as run_split

    _run(run_split, _config(ctx, protocol=protocol), as_json)


@cli.command()
@zoo_options
@json_option
@click.pass_context
def train(ctx: click.Context, as_json: bool, **zoo: Any) -> None:
    """Tune (Optuna, resumable, with pruning) and train each model; every trial is an MLflow run."""
    from pipelines.train import train as run_train

    _run(run_train, _config(ctx, **_zoo(**zoo)), as_json)


@cli.command()
@click.option(
    "--fusions", default=None, help='Comma-separated fusions: blend,rrf,stacking (default all; "" none).'
)
@json_option
@click.pass_context
def fuse(ctx: click.Context, fusions: str | None, as_json: bool) -> None:
    """Tune the fusions of the trained models and select the best candidate on validation."""
    from pipelines.fuse import fuse_and_select

    _run(fuse_and_select, _config(ctx, fusions=_names(fusions)), as_json)


@cli.command()
@click.option("--k", type=click.IntRange(1, 1000), default=None, help="Cut-off of the ranking metrics.")
@json_option
@click.pass_context
def evaluate(ctx: click.Context, k: int | None, as_json: bool) -> None:
    """Score every final model, fusion and the selection on the test split, once (metrics@k, coverage,
    diversity, novelty, bootstrap CI of the selection against the best single model)."""
    from pipelines.evaluate import evaluate as run_evaluate

    _run(run_evaluate, _config(ctx, k=k), as_json)


@cli.group(invoke_without_command=True)
@source_options
@click.option(
    "--protocol",
    type=click.Choice(["msr", "temporal", "next-basket"]),
    default=None,
    help="Evaluation protocol (default: the dataset's own; msr for files).",
)
@zoo_options
@click.option("--k", type=click.IntRange(1, 1000), default=10, show_default=True)
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the benchmark JSON here.")
@click.option(
    "--workdir", type=click.Path(file_okay=False), help="Scratch home (default: HOME/bench/DATASET-PROTOCOL)."
)
@click.option("--keep", is_flag=True, help="Keep the scratch home, so Optuna studies resume.")
@click.pass_context
def bench(
    ctx: click.Context,
    protocol: str | None,
    k: int,
    json_out: str | None,
    workdir: str | None,
    keep: bool,
    models: str | None,
    fusions: str | None,
    n_trials: int | None,
    budget: tuple[str, ...],
    **source: Any,
) -> None:
    """Benchmark the model zoo and fusions on a dataset or file: the pipeline's own stages in a scratch home.

    Prints a table and writes {"dataset", "protocol", "k", "results": [...], "selected", ...} to --json.
    `fusionrec bench data --events N` benchmarks the data plane instead (see `fusionrec bench data --help`)."""
    if ctx.invoked_subcommand:
        return
    from pipelines.bench import bench as run_bench
    from pipelines.bench import bench_models

    zoo = _zoo(models, fusions, n_trials, budget)
    zoo["models"] = zoo["models"] or list(bench_models())
    src = _source(**source)
    probe = RunConfig.from_env(source=src, protocol=protocol)
    home = (
        Path(workdir)
        if workdir
        else Path(ctx.obj["home"]) / "bench" / f"{probe.source.name}-{probe.effective_protocol}"
    )
    cfg = RunConfig.from_env(
        home=home, source=src, protocol=protocol, k=k, **{k_: v for k_, v in zoo.items() if v is not None}
    )
    document = _call(lambda c: run_bench(c, Path(json_out) if json_out else None, keep), cfg)
    click.echo(bench_table(document))


@bench.command("data")
@click.option("--events", type=click.IntRange(1000), required=True, help="Events to generate and ingest.")
@click.option("--users", type=click.IntRange(10), default=None, help="Default: 1 per 100 events.")
@click.option("--items", type=click.IntRange(10), default=None, help="Default: 1 per 200 events.")
@click.option("--seed", type=int, default=42, show_default=True)
@click.option(
    "--online-store",
    "store",
    type=click.Choice(["sqlite", "redis"]),
    default=None,
    help="Feast online store.",
)
@click.option(
    "--workdir", type=click.Path(file_okay=False), help="Scratch folder (default: HOME/bench/data-N)."
)
@click.option("--keep", is_flag=True, help="Keep the generated shop and the scratch home.")
@click.option(
    "--json", "json_out", type=click.Path(dir_okay=False), help="Also write the figures as JSON here."
)
@click.pass_context
def bench_data(
    ctx: click.Context,
    events: int,
    users: int | None,
    items: int | None,
    seed: int,
    store: str | None,
    workdir: str | None,
    keep: bool,
    json_out: str | None,
) -> None:
    """Benchmark the data plane: generate N events, then ingest, validate, split and build Feast features,
    printing seconds and peak memory per stage and events per second."""
    from pipelines.bench_data import bench_data as run

    cfg = _config(ctx.find_root())
    folder = Path(workdir) if workdir else cfg.home / "bench" / f"data-{events}"
    online = store or cfg.online_store

    def go(_: RunConfig) -> Any:
        return run(events, folder, users, items, seed, online, keep)  # type: ignore[arg-type]

    result = _call(go, cfg)
    document = result.to_dict()
    if json_out:
        Path(json_out).write_text(json.dumps(document, indent=2))
    click.echo(
        f"{result.events:,} events, {result.users:,} users, {result.items:,} items; online store {online}"
    )
    click.echo(f"{'stage':<10} {'seconds':>9} {'events/s':>11} {'peak RSS MB':>12}")
    for name, timing in result.stages.items():
        rate = result.events / timing.seconds if timing.seconds else 0.0
        click.echo(f"{name:<10} {timing.seconds:>9.1f} {rate:>11,.0f} {timing.peak_rss_mb:>12,.0f}")
    click.echo(
        f"ingest + validate + features: {result.gate_seconds:.1f} s "
        f"({result.gate_seconds / 900:.0%} of the 15 min target); peak RSS {result.peak_rss_mb:,.0f} MB "
        f"({result.peak_rss_mb / 6144:.0%} of 6 GB); accepted {result.accepted:,}, rejected {result.rejected:,}"
    )


def bench_table(document: dict[str, Any]) -> str:
    k = document["k"]
    columns = [
        f"ndcg@{k}",
        f"precision@{k}",
        f"recall@{k}",
        f"map@{k}",
        "coverage",
        "train_seconds",
        "peak_rss_mb",
    ]
    lines = [f"{document['dataset']} · protocol {document['protocol']} · {document['test_users']} test users"]
    lines.append(f"{'model':<12}" + "".join(f"{c:>15}" for c in columns))
    for row in document["results"]:
        mark = "*" if row["model"] == document["selected"] else " "
        lines.append(
            f"{mark}{row['model']:<11}" + "".join(f"{row.get(c, float('nan')):>15.4f}" for c in columns)
        )
    lines.append(f"* selected: {document['selected']} ({document['selection_reason']})")
    if document.get("confidence_interval"):
        ci = document["confidence_interval"]
        lines.append(
            f"selected - {ci['versus']} on test {ci['metric']}: {ci['difference']:+.4f} "
            f"[95% CI {ci['low']:+.4f}, {ci['high']:+.4f}]"
        )
    lines.append(f"total {document['seconds']:.0f}s, peak RSS {document['peak_rss_mb']:.0f} MB")
    return "\n".join(lines)


@cli.command("bench-report")
@click.argument("benchmarks", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", default="docs/benchmarks.md", show_default=True, type=click.Path(dir_okay=False))
def bench_report(benchmarks: tuple[str, ...], out: str) -> None:
    """Render benchmark JSON files into a Markdown page with plots, beside the published numbers."""
    from pipelines.bench_report import write_report

    try:
        write_report([Path(b) for b in benchmarks], Path(out))
    except ValueError as error:  # a file that is not a benchmark document
        raise click.ClickException(str(error)) from None
    click.echo(f"wrote {out}")


# Stages that take nothing but the run's config: one command each, generated from this table.
SIMPLE_STAGES = (
    (
        "version",
        "pipelines.version:version_data",
        "Version the validated data with DVC and push it to the local remote.",
    ),
    (
        "features",
        "pipelines.features:build_features",
        "Compute features, `feast apply` and materialize them to the online store.",
    ),
    (
        "register",
        "pipelines.register:register",
        "Log the selection as an MLflow pyfunc, register it, alias it `challenger`.",
    ),
    (
        "promote",
        "pipelines.promote:promote",
        "Write the champion's recommendations to the serving store and switch to them atomically.",
    ),
)


def _stage(target: str) -> Callable[[RunConfig], Any]:
    module, function = target.split(":")
    return getattr(importlib.import_module(module), function)


def _add_stage_command(name: str, target: str, help_text: str) -> None:
    @cli.command(name, help=help_text)
    @json_option
    @click.pass_context
    def command(ctx: click.Context, as_json: bool) -> None:
        _run(_stage(target), _config(ctx), as_json)


for _name, _target, _help in SIMPLE_STAGES:
    _add_stage_command(_name, _target, _help)


@cli.command()
@json_option
@click.pass_context
def rollback(ctx: click.Context, as_json: bool) -> None:
    """Switch the serving store back to the previous version (one atomic pointer swap)."""
    from serving.store import open_store

    def run_rollback(cfg: RunConfig) -> dict[str, Any]:
        start = time.perf_counter()
        store = open_store(cfg)
        previous = store.live_version()
        live = store.rollback()
        store.close()
        return {"live_version": live, "was": previous, "seconds": round(time.perf_counter() - start, 4)}

    _run(run_rollback, _config(ctx), as_json)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.pass_context
def serve(ctx: click.Context, host: str, port: int) -> None:
    """Serve recommendations over HTTP (FastAPI): /recommendations/{user_id}, /health, /docs."""
    from serving.app import serve as run_serve

    run_serve(_config(ctx), host=host, port=port)


@cli.command()
@click.argument("user_id")
@click.option("--k", default=10, show_default=True, type=click.IntRange(1, 100))
@json_option
@click.pass_context
def recommend(ctx: click.Context, user_id: str, k: int, as_json: bool) -> None:
    """Top-k recommendations for USER_ID from the serving store (same answer as the HTTP API)."""
    from fastapi import HTTPException

    from serving.app import recommend_once

    def answer(cfg: RunConfig) -> dict[str, Any]:
        try:
            return recommend_once(cfg, user_id, k)
        except HTTPException as exc:
            raise UserError(f"{exc.detail} (make demo, or fusionrec promote)") from exc

    payload = _call(answer, _config(ctx))
    if as_json:
        click.echo(json.dumps(payload, indent=2))
        return
    click.echo(
        f"user {payload['user_id']}  model {payload['model_version']}"
        f"{'  (cold start: popular items)' if payload['cold_start'] else ''}"
    )
    for rank, item in enumerate(payload["items"], start=1):
        why = item.get("explanation", {}).get("text", "")
        click.echo(
            f"{rank:>3}. {item['item_id']:<12} {item['score']:.4f}  {item['category'] or '':<14} {why}"
        )


@cli.command()
@json_option
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Champion, challenger (version, metrics, data hash, commit, GX result) and the live serving version."""
    from pipelines.status import status as run_status

    cfg = _config(ctx)
    if as_json:
        _run(run_status, cfg, as_json=True)
        return
    state = _call(run_status, cfg)
    for alias in ("champion", "challenger"):
        entry = state[alias]
        if entry is None:
            click.echo(f"{alias:<11} none")
            continue
        metrics = "  ".join(f"{k}={v:.4f}" for k, v in sorted(entry["test_metrics"].items()))
        approval = entry["approval"]
        click.echo(
            f"{alias:<11} v{entry['version']} ({entry['selected']}, {entry['dataset']}, {entry['protocol']})"
            f"  approval: {approval.get('status', '-')} by {approval.get('by', '-')} {approval.get('at', '')}"
        )
        click.echo(f"{'':<11} test: {metrics}")
        click.echo(f"{'':<11} data: dvc {entry['dvc_data_hash']}  code: git {entry['git_commit'][:12]}")
        click.echo(f"{'':<11} checks: {entry['gx_result']}")
    serving = state["serving"]
    click.echo(
        f"{'serving':<11} {serving['store']}: live {serving['live_version']}"
        f"  (previous {serving['previous_version']})"
    )
    checked = state["last_validation"]
    if checked.get("accepted"):
        click.echo(
            f"{'last data':<11} accepted {checked['accepted']}  rejected {checked['rejected']}"
            f"  quarantine: {checked['quarantine']}"
        )
        click.echo(f"{'':<11} data docs: file://{checked['data_docs']}")
        click.echo(f"{'':<11} drift: {state['last_drift'].get('message') or '-'}")


@cli.command("run")
@zoo_options
@click.option("--auto-approve", is_flag=True, help="Approve the challenger without a reviewer, then promote.")
@click.pass_context
def run_all(ctx: click.Context, auto_approve: bool, **zoo: Any) -> None:
    """Run every stage after ingest in this process, without Airflow (ingest first)."""
    from pipelines.run import run_pipeline

    cfg = _config(ctx, auto_approve=auto_approve, **_zoo(**zoo))
    _run(run_pipeline, cfg, as_json=True)


def _add_command_modules() -> None:
    from fusionrec.commands.approval import approve, compare, reject
    from fusionrec.commands.bench_serve import serve as bench_serve
    from fusionrec.commands.capacity import capacity
    from fusionrec.commands.distributed import train_distributed
    from fusionrec.commands.generate import generate
    from fusionrec.commands.lineage import lineage
    from fusionrec.commands.monitor import monitor
    from fusionrec.commands.report import report
    from fusionrec.commands.simulate import simulate

    cli.add_command(generate)
    cli.add_command(lineage)
    cli.add_command(approve)
    cli.add_command(reject)
    cli.add_command(compare)
    cli.add_command(monitor)
    cli.add_command(report)
    cli.add_command(simulate)
    cli.add_command(train_distributed)
    bench.add_command(bench_serve)
    bench.add_command(capacity)


_add_command_modules()


def main() -> None:
    cli(prog_name="fusionrec")


if __name__ == "__main__":
    main()
