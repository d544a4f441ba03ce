"""Split stage: train/test by the run's protocol, and a validation split carved from train only.

Writes ``cfg.paths.splits/{fit,valid,train,test}.parquet`` where ``train = fit + valid``. Tuning (Optuna, fusion
weights, selection) fits on ``fit`` and scores on ``valid``; final models fit on ``train`` and are scored on
``test`` once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fusionrec.config import RunConfig
from pipelines.schema import INTERACTIONS, table_file
from pipelines.stage import StageInputError, StageResult

log = logging.getLogger(__name__)

SPLITS = ("fit", "valid", "train", "test")
VALID_RATIO = 0.8  # share of train kept for fitting while tuning


@dataclass
class SplitResult(StageResult):
    protocol: str
    rows: dict[str, int]
    users: dict[str, int]
    output: str


def stratified_split(
    data: pd.DataFrame, ratio: float, col: str = "item_id", seed: int = 42
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Microsoft Recommenders' ``python_stratified_split``: one uniform random number per row (numpy seeded
    once with ``seed``), rows ranked by it within each group of ``col``; a group's first
    ``round(ratio * size)`` rows go to the first part."""
    # RandomState(seed).rand draws exactly what the reference's np.random.seed(seed); np.random.rand does.
    draws = np.random.RandomState(seed).rand(len(data))
    shuffled = data.assign(_random=draws).sort_values([col, "_random"])
    rank = shuffled.groupby(col).cumcount() + 1
    size = shuffled.groupby(col)[col].transform("size")
    first = (rank <= (ratio * size).round()).to_numpy()
    shuffled = shuffled.drop(columns="_random")
    return shuffled[first], shuffled[~first]


def temporal_split(data: pd.DataFrame, ratios: tuple[float, float, float]) -> tuple[pd.DataFrame, ...]:
    """Per user, time-ordered: the first ``ratios[0]`` share, then the next, then the rest."""
    ordered = data.sort_values(["user_id", "timestamp", "source_row"], kind="stable")
    position = ordered.groupby("user_id").cumcount()
    size = ordered.groupby("user_id")["user_id"].transform("size")
    share = position / size
    first = share < ratios[0]
    second = ~first & (share < ratios[0] + ratios[1])
    return ordered[first], ordered[second], ordered[~first & ~second]


def last_basket_split(data: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each user's last session (order) against everything before it; users with one order stay whole."""
    orders = data.groupby(["user_id", "session_id"], sort=False)["timestamp"].min().reset_index()
    orders["rank"] = orders.groupby("user_id")["timestamp"].rank(method="first", ascending=False)
    counts = orders.groupby("user_id")["session_id"].transform("size")
    last = orders[(orders["rank"] == 1) & (counts > 1)][["user_id", "session_id"]]
    is_last = data.merge(last.assign(_last=True), on=["user_id", "session_id"], how="left")["_last"]
    mask = is_last.notna().to_numpy()
    return data[~mask], data[mask]


def split_interactions(data: pd.DataFrame, protocol: str, seed: int) -> dict[str, pd.DataFrame]:
    """The four splits for ``protocol`` (msr, temporal or next-basket)."""
    if protocol == "msr":
        train, test = stratified_split(data, 0.75, "item_id", seed)
        fit, valid = stratified_split(train, VALID_RATIO, "item_id", seed)
    elif protocol == "temporal":
        fit, valid, test = temporal_split(data, (0.8, 0.1, 0.1))
        train = pd.concat([fit, valid])
    elif protocol == "next-basket":
        if data["session_id"].isna().all():
            raise StageInputError(
                "protocol next-basket needs session ids (orders/baskets) in the interactions; use msr or temporal"
            )
        train, test = last_basket_split(data)
        fit, valid = last_basket_split(train)
    else:
        raise StageInputError(f"unknown protocol {protocol!r}")
    return {"fit": fit, "valid": valid, "train": train, "test": test}


def _read_compact(path: Path) -> pd.DataFrame:
    """The validated interactions with Arrow-backed strings (a quarter of the memory of Python strings at 10M
    rows); ``source_file`` stays in validated/ as row lineage, the splits do not need it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = [c for c in pq.ParquetFile(path).schema_arrow.names if c != "source_file"]
    table = pq.read_table(path, columns=names)
    return table.to_pandas(types_mapper={pa.string(): pd.StringDtype("pyarrow")}.get)


def _write_plain(frame: pd.DataFrame, path: Path) -> None:
    """Parquet without pandas metadata, so readers get the usual dtypes (object strings), not Arrow ones."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    pq.write_table(table.replace_schema_metadata(None), path)


def split(cfg: RunConfig) -> SplitResult:
    """Split ``validated/interactions.parquet`` by ``cfg.effective_protocol``."""
    data = _read_compact(cfg.paths.validated / table_file(INTERACTIONS))
    parts = split_interactions(data, cfg.effective_protocol, cfg.seed)
    out = cfg.paths.splits
    out.mkdir(parents=True, exist_ok=True)
    for name, frame in parts.items():
        _write_plain(frame, out / f"{name}.parquet")
    result = SplitResult(
        protocol=cfg.effective_protocol,
        rows={name: len(frame) for name, frame in parts.items()},
        users={name: int(frame["user_id"].nunique()) for name, frame in parts.items()},
        output=str(out),
    )
    log.info("split (%s): %s", result.protocol, result.rows)
    result.save(cfg.paths.reports, "split")
    return result
