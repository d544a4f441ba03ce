"""The data `fusionrec bench serve` publishes: a synthetic catalogue, every user's candidates with explanation
anchors, a version context, purchases and out-of-stock rules, as the promote stage and the shop would leave
them; and the thin baseline's pre-serialized top-100 lists. All under fresh Redis prefixes, dropped after."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from fusionrec.config import RunConfig

TOP_N = 100  # items per user, in the store and in the baseline's lists
CATEGORIES = 20
BRANDS = 200
PURCHASES_FROM_TOP = 2  # purchases per user among their own top-20, plus one elsewhere
NEIGHBOURS = 10


@dataclass
class Catalogue:
    item_ids: list[str]
    category: list[str]
    brand: list[str]
    price: list[float]
    in_stock: list[bool]
    popularity: np.ndarray  # probabilities, sums to 1, item 0 the most popular


@dataclass
class PreparedStore:
    """What the benchmark published: the live version of ours and the baseline's keys."""

    version: str
    user_ids: list[str]  # raw ids, as the shop sends them
    baseline_prefix: str  # the baseline's keys: <baseline_prefix>:top:<raw user id>
    pseudonym_key: str


def synthetic_catalogue(items: int, seed: int) -> Catalogue:
    """``items`` items with long-tail popularity, 20 categories, 200 brands, log-normal prices, 90% in stock."""
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, items + 1) ** 0.8
    return Catalogue(
        item_ids=[f"i{j:06d}" for j in range(items)],
        category=[f"c{c:02d}" for c in rng.zipf(1.6, items) % CATEGORIES],
        brand=[f"b{b:03d}" for b in rng.integers(0, BRANDS, items)],
        price=np.round(np.clip(rng.lognormal(3.5, 1.0, items), 1.0, 2000.0), 2).tolist(),
        in_stock=(rng.random(items) < 0.9).tolist(),
        popularity=popularity / popularity.sum(),
    )


def synthetic_top_lists(
    users: int, catalogue: Catalogue, seed: int, chunk: int = 500
) -> Iterator[np.ndarray]:
    """Per user, the indices of ``TOP_N`` distinct items drawn by popularity, best first (Gumbel top-k)."""
    rng = np.random.default_rng(seed + 1)
    log_p = np.log(catalogue.popularity)
    top = min(TOP_N, len(log_p))
    for start in range(0, users, chunk):
        keys = log_p + rng.gumbel(size=(min(chunk, users - start), len(log_p)))
        best = np.argpartition(-keys, top - 1, axis=1)[:, :top]
        order = np.argsort(-np.take_along_axis(keys, best, axis=1), axis=1)
        yield from np.take_along_axis(best, order, axis=1)


def synthetic_context(catalogue: Catalogue, seed: int) -> dict[str, Any]:
    """A version context shaped like ``serving.context.build_context``'s: catalogue attributes, popular
    lists overall and per category, and ``NEIGHBOURS`` same-category neighbours per item."""
    rng = np.random.default_rng(seed + 2)
    ids, pop = catalogue.item_ids, catalogue.popularity
    by_category: dict[str, list[int]] = {}
    for j, category in enumerate(catalogue.category):  # items are in popularity order already
        by_category.setdefault(category, []).append(j)
    neighbours = {}
    for members in by_category.values():
        pool = np.asarray(members)
        for j in members:
            picks = rng.choice(pool, size=min(NEIGHBOURS + 1, len(pool)), replace=False)
            neighbours[ids[j]] = [ids[n] for n in picks if n != j][:NEIGHBOURS]
    return {
        "item_fields": ["title", "category", "brand", "price"],
        "items": {
            ids[j]: [f"Item {j}", catalogue.category[j], catalogue.brand[j], catalogue.price[j]]
            for j in range(len(ids))
        },
        "popular": [[ids[j], float(pop[j])] for j in range(min(TOP_N, len(ids)))],
        "popular_by_category": {
            c: [[ids[j], float(pop[j])] for j in members[:TOP_N]] for c, members in by_category.items()
        },
        "neighbours": neighbours,
    }


@dataclass
class SyntheticUser:
    raw_id: str  # what the shop sends
    stored_id: str  # the pseudonym the store and the events are keyed by
    ranked: list[tuple[str, float]]  # TOP_N items, best first
    anchors: list[str | None]  # per item: the bought item that explains it, or None
    bought: list[str]


def synthetic_users(
    users: int, catalogue: Catalogue, seed: int, pseudonym_key: bytes
) -> Iterator[SyntheticUser]:
    """Users ``u000000``, ... with their top lists, ``PURCHASES_FROM_TOP`` purchases from their own top-20 (so
    exclude_purchased removes something) plus one elsewhere, and explanation anchors among the purchases."""
    from pipelines.privacy import pseudonymise_one

    rng = np.random.default_rng(seed + 3)
    ids = catalogue.item_ids
    for u, top in enumerate(synthetic_top_lists(users, catalogue, seed)):
        raw = f"u{u:06d}"
        bought = [ids[j] for j in rng.choice(top[:20], PURCHASES_FROM_TOP, replace=False)]
        bought.append(ids[int(rng.integers(0, len(ids)))])
        yield SyntheticUser(
            raw_id=raw,
            stored_id=pseudonymise_one(raw, pseudonym_key),
            ranked=[(ids[j], round(1.0 - r / TOP_N, 4)) for r, j in enumerate(top)],
            anchors=rng.choice(np.array([*bought, None], dtype=object), size=len(top)).tolist(),
            bought=bought,
        )


def prepare_store(
    cfg: RunConfig, users: int, items: int, seed: int, *, pseudonym_key: str, baseline_prefix: str
) -> PreparedStore:
    """Publish a synthetic version to ``cfg``'s Redis serving store as the promote stage would (``users`` x
    ``TOP_N`` candidates with explanation anchors, keyed by the users' pseudonyms, and a version context over a
    catalogue of ``items``), record the users' purchases in ``cfg``'s event store (``exclude_purchased``) and
    mark the out-of-stock tenth of the catalogue in the merchandising rules file (``in_stock``); SET the
    baseline's pre-serialized lists (the same items, keyed by raw id).

    The one place that knows how the app reads its data (``publish``, the rules file, the event store)."""
    import redis
    import yaml

    from serving.events import FeedbackEvent, open_event_store
    from serving.store import open_store

    catalogue = synthetic_catalogue(items, seed)
    recs: dict[str, list[tuple[str, float, str | None]]] = {}
    purchases: list[FeedbackEvent] = []
    when = datetime(2026, 6, 1, tzinfo=UTC)
    client = redis.Redis.from_url(cfg.redis_url)
    pipe = client.pipeline(transaction=False)
    user_ids = []
    for n, user in enumerate(synthetic_users(users, catalogue, seed, pseudonym_key.encode())):
        user_ids.append(user.raw_id)
        recs[user.stored_id] = [(i, s, a) for (i, s), a in zip(user.ranked, user.anchors, strict=True)]
        purchases += [
            FeedbackEvent("purchase", user.stored_id, i, when, order_value=9.99) for i in user.bought
        ]
        body = {"user_id": user.raw_id, "items": [{"item_id": i, "score": s} for i, s in user.ranked]}
        pipe.set(f"{baseline_prefix}:top:{user.raw_id}", json.dumps(body, separators=(",", ":")))
        if n % 1000 == 999:
            pipe.execute()
    pipe.execute()
    client.close()
    out_of_stock = [i for i, ok in zip(catalogue.item_ids, catalogue.in_stock, strict=True) if not ok]
    rules = {"out_of_stock": out_of_stock, "boosts": [{"category": "c01", "factor": 1.3}]}
    cfg.paths.merch_rules.parent.mkdir(parents=True, exist_ok=True)
    cfg.paths.merch_rules.write_text(yaml.safe_dump(rules))
    events = open_event_store(cfg)
    events.add(purchases)
    events.close()
    version = f"bench-{uuid.uuid4().hex[:8]}"
    store = open_store(cfg)
    fallback = [(catalogue.item_ids[j], float(catalogue.popularity[j])) for j in range(TOP_N)]
    meta = {"model_name": "bench-serve", "model_version": "0", "items": items}
    store.publish(version, recs, fallback, meta, context=synthetic_context(catalogue, seed))
    store.close()
    return PreparedStore(version, user_ids, baseline_prefix, pseudonym_key)


def drop_keys(redis_url: str, prefixes: Sequence[str]) -> int:
    """Delete every key under ``<prefix>:`` for each of ``prefixes``. Returns how many."""
    import redis

    client = redis.Redis.from_url(redis_url)
    keys = [key for prefix in prefixes for key in client.scan_iter(match=prefix + ":*", count=1000)]
    dropped = 0
    for start in range(0, len(keys), 1000):
        dropped += client.unlink(*keys[start : start + 1000])  # type: ignore[operator]  # sync client: an int
    client.close()
    return dropped
