"""Benchmark of the features stage at shop scale on synthetic events (numpy, seeded).

Writes ``splits/train.parquet``, ``splits/fit.parquet`` and ``validated/items.parquet`` into a temporary
FUSIONREC_HOME, runs ``build_features`` (snapshots + Feast apply + materialization into SQLite or Redis), reads
a few users/items back online, optionally times ``training_features`` over every user and item, prints one
JSON line and removes the temporary home (and the project's Redis keys).

    /usr/bin/time -v .venv/bin/python scripts/bench_features.py --events 10_000_000 --online-store redis

Events come in sessions (about 8 events each, minutes apart) of users with lognormal activity, on items with
Zipf-like popularity; 70% views, 15% clicks, 10% carts, 5% purchases; prices from the catalogue with noise
(10% missing), quantities on carts/purchases, 5% of events without a session. ``fit`` is ``train`` minus its
last tenth of time (what tuning sees).
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fusionrec.config import RunConfig  # noqa: E402
from pipelines import features as F  # noqa: E402

DAY_S = 86_400
START = np.datetime64("2024-01-01", "ns").astype(np.int64)  # first event time, ns since the epoch
TIMESTAMP = pa.timestamp("ns", tz="UTC")
EVENT_TYPES = np.array(["view", "click", "cart", "purchase"])
EVENT_SHARES = [0.70, 0.15, 0.10, 0.05]


def _strings(prefix: str, n: int) -> pa.Array:
    return pc.binary_join_element_wise(prefix, pa.array(np.arange(n).astype(str)), "")


def _coded(codes: np.ndarray, dictionary: pa.Array, null: np.ndarray | None = None) -> pa.Array:
    """A plain string column (as the split stage writes it) from int codes into ``dictionary``."""
    indices = pa.array(codes.astype(np.int32), mask=null)
    return pa.DictionaryArray.from_arrays(indices, dictionary).cast(pa.string())


def synthetic_items(n_items: int, rng: np.random.Generator) -> pa.Table:
    categories = _strings("cat", 60)
    category = rng.zipf(1.6, n_items).clip(max=60) - 1
    sub = rng.integers(0, 5, n_items)
    category_strings = _coded(category, categories)
    path = pc.binary_join_element_wise(category_strings, _coded(sub, _strings("sub", 5)), " > ")
    brand_null = rng.random(n_items) < 0.2
    return pa.table(
        {
            "item_id": _strings("i", n_items),
            "title": _strings("product ", n_items),
            "category": category_strings,
            "category_path": path,
            "brand": _coded(rng.integers(0, 2_000, n_items), _strings("brand", 2_000), brand_null),
            "price": pa.array(np.round(rng.lognormal(2.5, 1.0, n_items), 2), mask=rng.random(n_items) < 0.05),
            "created_at": pa.array(START - rng.integers(1, 365, n_items) * DAY_S * 10**9).cast(TIMESTAMP),
        }
    )


def synthetic_events(
    n_events: int, n_users: int, items: pa.Table, days: int, rng: np.random.Generator
) -> pa.Table:
    n_items = items.num_rows
    n_sessions = max(n_events // 8, 1)
    user_weight = rng.lognormal(0.0, 1.0, n_users)
    session_user = rng.choice(n_users, n_sessions, p=user_weight / user_weight.sum())
    session_user[: min(n_users, n_sessions)] = np.arange(min(n_users, n_sessions))  # every user shops once
    session_start = rng.uniform(0, days * DAY_S, n_sessions)
    session = rng.integers(0, n_sessions, n_events)
    seconds = np.minimum(session_start[session] + rng.exponential(240.0, n_events), days * DAY_S - 1)
    item_weight = 1.0 / (np.arange(n_items) + 10.0) ** 0.9
    item = rng.permutation(n_items)[rng.choice(n_items, n_events, p=item_weight / item_weight.sum())]
    kind = rng.choice(len(EVENT_TYPES), n_events, p=EVENT_SHARES)
    catalogue_price = np.nan_to_num(items.column("price").to_numpy(zero_copy_only=False), nan=9.99)
    price = np.round(catalogue_price[item] * rng.uniform(0.9, 1.1, n_events), 2)
    quantity = (1 + rng.poisson(0.3, n_events)).astype(np.float64)
    timestamp = START + (seconds * 1e9).astype(np.int64)
    table = pa.table(
        {
            "user_id": _coded(session_user[session], _strings("u", n_users)),
            "item_id": _coded(item, items.column("item_id").combine_chunks()),
            "rating": pa.nulls(n_events, pa.float64()),
            "timestamp": pa.array(timestamp).cast(TIMESTAMP),
            "event_type": _coded(kind, pa.array(EVENT_TYPES)),
            "session_id": _coded(session, _strings("s", n_sessions), rng.random(n_events) < 0.05),
            "price": pa.array(price, mask=rng.random(n_events) < 0.10),
            "quantity": pa.array(quantity, mask=kind < 2),
            "source_file": pa.array(np.full(n_events, "synthetic.parquet")),
            "source_row": pa.array(np.arange(1, n_events + 1, dtype=np.int64)),
        }
    )
    return table.sort_by("timestamp")


def bench_config(home: Path, args: argparse.Namespace) -> RunConfig:
    return RunConfig.from_env(home=home, online_store=args.online_store, redis_url=args.redis_url)


def write_inputs(home: Path, args: argparse.Namespace) -> None:
    rng = np.random.default_rng(args.seed)
    cfg = bench_config(home, args)
    items = synthetic_items(args.items, rng)
    events = synthetic_events(args.events, args.users, items, args.days, rng)
    cfg.paths.splits.mkdir(parents=True, exist_ok=True)
    cfg.paths.validated.mkdir(parents=True, exist_ok=True)
    pq.write_table(items, cfg.paths.validated / "items.parquet")
    pq.write_table(events, cfg.paths.splits / "train.parquet")
    cutoff = pa.scalar(int((START + args.days * 0.9 * DAY_S * 1e9).item()), pa.int64()).cast(TIMESTAMP)
    fit = events.filter(pc.less(events.column("timestamp"), cutoff))
    pq.write_table(fit, cfg.paths.splits / "fit.parquet")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run(args: argparse.Namespace) -> dict:
    home = Path(tempfile.mkdtemp(prefix="fusionrec-bench-features-", dir=args.dir))
    out: dict = {"events": args.events, "users": args.users, "items": args.items, "days": args.days}
    cfg = None
    try:
        started = time.perf_counter()
        # In a child process, so this process's peak RSS is the stage's alone.
        child = multiprocessing.get_context("fork").Process(target=write_inputs, args=(home, args))
        child.start()
        child.join()
        if child.exitcode != 0:
            raise RuntimeError(f"generating the inputs failed (exit code {child.exitcode})")
        cfg = bench_config(home, args)
        out["generate_s"] = round(time.perf_counter() - started, 1)
        out["rss_before_build_mb"] = round(peak_rss_mb())

        started = time.perf_counter()
        result = F.build_features(cfg)
        out["build_s"] = round(time.perf_counter() - started, 1)
        out["result"] = result.to_dict()

        out["build_peak_rss_mb"] = round(peak_rss_mb())
        rng = np.random.default_rng(0)
        for kind, read, n in (
            ("users", F.online_user_features, args.users),
            ("items", F.online_item_features, args.items),
        ):
            ids = [f"{kind[0]}{k}" for k in rng.choice(n, min(n, 1_000), replace=False)]
            online = read(cfg, ids)
            out[f"online_sample_{kind}_known"] = (
                f"{sum(row[next(iter(row))] is not None for row in online.values())}/{len(ids)}"
            )

        if args.retrieve:
            started = time.perf_counter()
            users, items = F.training_features(
                cfg, [f"u{k}" for k in range(args.users)], [f"i{k}" for k in range(args.items)], "2100-01-01"
            )
            out["training_features_s"] = round(time.perf_counter() - started, 1)
            out["matrix_shapes"] = [list(users.shape), list(items.shape)]
        out["peak_rss_mb"] = round(peak_rss_mb())
        return out
    finally:
        if cfg is not None and cfg.online_store == "redis" and (cfg.paths.features / "registry.db").exists():
            F.feature_store(cfg).teardown()  # this project's keys only
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--days", type=int, default=180)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--online-store", choices=["sqlite", "redis"], default="redis")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--retrieve", action="store_true", help="also time training_features for every id")
    parser.add_argument("--dir", default=None, help="parent folder of the temporary home")
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary home (its Redis keys are removed anyway)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("feast").setLevel(logging.WARNING)  # "Registry cache expired" on every call
    print(json.dumps(run(args)))


if __name__ == "__main__":
    main()
