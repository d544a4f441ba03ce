"""`fusionrec train-distributed`: the two-tower trained data-parallel by N local worker processes
(tf.distribute MultiWorkerMirroredStrategy, pipelines/distributed.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from fusionrec.config import RunConfig
    from models.base import InteractionData

SOURCES = ("ml-100k", "home")


@click.command("train-distributed")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True, help="Worker processes.")
@click.option(
    "--source",
    type=click.Choice(SOURCES),
    default="ml-100k",
    show_default=True,
    help="ml-100k: the bundled MovieLens-100k ratings as implicit feedback; home: the run's train split "
    "with its Feast user/item features (after `fusionrec split` and `fusionrec features`).",
)
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option(
    "--batch-size",
    type=click.IntRange(min=2),
    default=512,
    show_default=True,
    help="Per worker: the in-batch negatives of each replica.",
)
@click.option("--embedding-dim", type=click.IntRange(min=1), default=64, show_default=True)
@click.option(
    "--learning-rate", type=click.FloatRange(min=0, min_open=True), default=0.005, show_default=True
)
@click.option("--temperature", type=click.FloatRange(min=0, min_open=True), default=0.2, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the chief saves the model (default: <home>/artifacts/distributed/two_tower).",
)
@click.option(
    "--timeout", type=click.FloatRange(min=1), default=900.0, show_default=True, help="Seconds for the job."
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def train_distributed(
    ctx: click.Context,
    workers: int,
    source: str,
    epochs: int,
    batch_size: int,
    embedding_dim: int,
    learning_rate: float,
    temperature: float,
    seed: int,
    out: Path | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Train the two-tower data-parallel across --workers local processes (TF_CONFIG cluster on loopback,
    gRPC all-reduce); the chief saves a TwoTower that loads and recommends like any other model.

    Prints per-worker steps and losses, the wall time and where the model was saved.
    """
    from fusionrec.cli import _config
    from pipelines.distributed import DistributedConfig
    from pipelines.distributed import train_distributed as run

    cfg = _config(ctx)
    data = _home_train_data(cfg) if source == "home" else _movielens_data()
    config = DistributedConfig(
        workers=workers,
        embedding_dim=embedding_dim,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        temperature=temperature,
        seed=seed,
        timeout_seconds=timeout,
    )
    try:
        result = run(data, out or cfg.paths.artifacts / "distributed" / "two_tower", config)
    except (ValueError, RuntimeError) as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(1)
    payload = result.to_dict()
    if as_json:
        click.echo(json.dumps(payload, indent=2, sort_keys=True))
        return
    for report in payload["reports"]:
        click.echo(
            f"worker {report['index']}: {report['examples']} pairs, {report['steps']} steps, "
            f"loss {report['loss']:.4f}, train {report['train_seconds']:.1f}s of {report['seconds']:.1f}s"
        )
    click.echo(
        f"{payload['workers']} workers in {payload['wall_seconds']:.1f}s, final loss {payload['final_loss']:.4f}, "
        f"model saved to {payload['model_path']}"
    )


def _movielens_data() -> InteractionData:
    from models.base import InteractionData
    from pipelines.datasets import load_movielens_100k
    from pipelines.splitdata import interaction_matrix

    interactions = load_movielens_100k().interactions
    user_ids = interactions["user_id"].drop_duplicates().sort_values().to_numpy(dtype=object)
    item_ids = interactions["item_id"].drop_duplicates().sort_values().to_numpy(dtype=object)
    return InteractionData(interaction_matrix(interactions, user_ids, item_ids), user_ids, item_ids)


def _home_train_data(cfg: RunConfig) -> InteractionData:
    from pipelines.splitdata import load_split_data

    if not (cfg.paths.splits / "train.parquet").exists():
        click.echo(
            f"error: no train split in {cfg.home}: run `fusionrec split` and `fusionrec features`", err=True
        )
        sys.exit(2)
    return load_split_data(cfg).train
