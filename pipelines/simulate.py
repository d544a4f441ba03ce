"""Shopper simulator: shoppers of a generated shop visit the API, see recommendations and react as their
ground-truth tastes say, sending impressions, clicks, carts and purchases back as feedback.

The shop's truth (pipelines/generate.py, ``load_truth``) knows every user's utility for every item. A visit asks
``GET /recommendations/{user}?k=K`` with the generator's raw user id (the API pseudonymises it, as ingestion
did), records an impression per item shown (with the answer's request id, arm, model version and position),
then walks each item down the funnel with the generator's own funnel logits (``TasteModel``: click, cart and
purchase intercepts plus ``slope`` x utility, at list price; the generator's discount and staple bonuses
do not apply to a recommendation). What is new here is a position bias: a shopper examines position ``p``
(0-based) with probability ``1 / log2(p + 2)`` (the DCG discount) and can only click what they examined.
A durable item the shopper already owns (bought in the shop's history or earlier in the simulation) is not
bought again: the chain stops at the click, the generator's rule. A purchase's quantity follows the generator
(1 + Poisson(0.7) for consumables, 1 + Poisson(0.08) otherwise) and its order value is price x quantity, the
price being the one the API answered (else the catalogue's list price).

Events go to ``POST /events`` in batches with fresh event ids, resent as they were after a 503 or a dropped
connection (the store ignores ids it has). Each visit draws from its own seeded generator, so a seed gives the
same shoppers and the same reactions to the same answers. Besides the counts, the result gives each arm's
*expected* CTR and CVR (the mean click and purchase probabilities of what it showed), free of sampling noise:
the truth an experiment report's intervals should cover.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from fusionrec.config import RunConfig
from pipelines.generate import TAXONOMY, ShopTruth, load_truth
from pipelines.stage import StageResult

MAX_BATCH = 1000  # the API's limit per POST /events
RETRIES = 3
FUNNEL_DELAYS = (3.0, 20.0, 60.0)  # seconds after the impression: click, cart, purchase
CONSUMABLE_EXTRA, DURABLE_EXTRA = 0.7, 0.08  # the generator's Poisson means of extra units


class SimulationError(RuntimeError):
    """The API refused the simulator (bad request, no model, unreachable); the message says what to fix."""


@dataclass
class SimulateConfig:
    shop: Path  # folder written by `fusionrec generate` (truth/ and items.parquet)
    shoppers: int = 1000  # distinct users, drawn without replacement while the shop has enough
    visits: int = 1  # visits per shopper (rounds: every shopper's first visit, then the second, ...)
    k: int = 10
    seed: int = 0
    batch: int = 500  # events per POST /events


@dataclass
class ArmCounts:
    visits: int = 0
    impressions: int = 0
    clicks: int = 0
    carts: int = 0
    purchases: int = 0
    revenue: float = 0.0
    cold_starts: int = 0
    expected_clicks: float = 0.0  # sum of click probabilities of the impressions
    expected_purchases: float = 0.0

    @property
    def expected_ctr(self) -> float | None:
        return self.expected_clicks / self.impressions if self.impressions else None

    @property
    def expected_cvr(self) -> float | None:
        return self.expected_purchases / self.impressions if self.impressions else None


@dataclass
class SimulateResult(StageResult):
    shoppers: int
    visits: int
    failed_visits: int  # answers other than 200 (5xx after retries)
    events_sent: int
    events_accepted: int
    event_types: dict[str, int]
    arms: dict[str, dict[str, float | None]]  # ArmCounts plus expected_ctr / expected_cvr
    experiments: list[str]
    model_versions: list[str]
    seconds: float
    visits_per_second: float
    started_at: str  # UTC: `fusionrec report experiment --since` this to see this run only
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ the shopper


def examination(positions: np.ndarray) -> np.ndarray:
    """Probability that a shopper looks at each (0-based) position: the DCG discount 1 / log2(p + 2)."""
    return 1.0 / np.log2(np.asarray(positions, dtype=np.float64) + 2.0)


def funnel_probabilities(truth: ShopTruth, utility: np.ndarray) -> np.ndarray:
    """(items, 3): P(click | examined), P(cart | click), P(purchase | cart) from the generator's funnel logits."""
    m = truth.model
    drive = m.slope * np.asarray(utility, dtype=np.float64)[:, None]
    logits = np.array([m.click, m.cart, m.purchase]) + drive
    return 1.0 / (1.0 + np.exp(-logits))


def item_indices(truth: ShopTruth, item_ids: list[str]) -> np.ndarray:
    """Row index of each item in the truth; -1 for items this shop never made."""
    try:
        return truth.item_index(item_ids).astype(np.int64)
    except KeyError:
        out = np.full(len(item_ids), -1, np.int64)
        for i, item in enumerate(item_ids):
            with suppress(KeyError):
                out[i] = truth.item_index([item])[0]
        return out


@dataclass
class Shop:
    """What the shoppers know: the truth, list prices, which items are consumables and who owns which
    durable items (a durable item is bought once: the generator's rule, kept up to date as shoppers buy)."""

    truth: ShopTruth
    list_price: dict[str, float]
    consumable: np.ndarray  # (items,) bool
    owned: set[int]  # user * n_items + item of durable items already bought

    @classmethod
    def load(cls, folder: Path) -> Shop:
        import pyarrow.dataset as ds
        import pyarrow.parquet as pq

        folder = Path(folder)
        if not (folder / "truth" / "truth.json").exists():
            raise SimulationError(f"{folder} has no truth/: give the folder `fusionrec generate --out` wrote")
        truth = load_truth(folder)
        prices = pq.read_table(folder / "items.parquet", columns=["item_id", "price"]).to_pydict()
        consumable = np.array([TAXONOMY[c][1] for c in truth.categories])[truth.item_category]
        bought = (
            ds.dataset(folder / "events", format="parquet")
            .to_table(columns=["user_id", "item_id"], filter=ds.field("event_type") == "purchase")
            .to_pydict()
        )
        users, items = truth.user_index(bought["user_id"]), truth.item_index(bought["item_id"])
        durable = ~consumable[items]
        owned = set((users[durable] * truth.n_items + items[durable]).tolist())
        return cls(truth, dict(zip(prices["item_id"], prices["price"], strict=True)), consumable, owned)

    def user_id(self, index: int) -> str:
        return f"u{index:0{self.truth.user_id_width}d}"

    def owns(self, user: int, items: np.ndarray) -> np.ndarray:
        keys = user * self.truth.n_items + items
        return np.array([k in self.owned for k in keys.tolist()], bool) & (items >= 0)


def react(shop: Shop, user: int, answer: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """What one shopper does with one answer: per item the furthest funnel step (0 impression .. 3 purchase),
    the quantity and unit price of purchases, and the expected click and purchase probabilities.

    A durable item the shopper owns is not bought again: a chain that would end in its purchase stops at the
    click, as in the generator. Durable items bought here are owned from then on."""
    items = answer["items"]
    ids = [i["item_id"] for i in items]
    index = item_indices(shop.truth, ids)
    known = index >= 0
    utility = np.where(known, shop.truth.utility_at(np.array(user), np.maximum(index, 0)), -np.inf)
    with np.errstate(over="ignore"):
        steps = funnel_probabilities(shop.truth, utility)
    click = examination(np.arange(len(ids))) * steps[:, 0]
    chain = np.column_stack([click, steps[:, 1], steps[:, 2]])
    passed = rng.random(chain.shape) < chain
    stage = np.cumprod(passed, axis=1).sum(axis=1)
    owned = shop.owns(user, index)
    stage = np.where(owned & (stage == 3), 1, stage)
    durable = known & ~shop.consumable[np.maximum(index, 0)]
    shop.owned.update((user * shop.truth.n_items + index[durable & (stage == 3)]).tolist())
    quantity = 1 + rng.poisson(np.where(durable | ~known, DURABLE_EXTRA, CONSUMABLE_EXTRA))
    price = [
        float(i["price"]) if i.get("price") is not None else shop.list_price.get(i["item_id"]) for i in items
    ]
    return {
        "item_ids": ids,
        "stage": stage,
        "quantity": quantity,
        "price": price,
        "expected_click": float(click.sum()),
        "expected_purchase": float((chain.prod(axis=1) * ~owned).sum()),
    }


def visit_events(raw_user: str, answer: dict[str, Any], reaction: dict[str, Any], at: datetime) -> list[dict]:
    """POST /events bodies for one visit: an impression per item shown, then its clicks, carts, purchases."""
    common = {"user_id": raw_user, "request_id": answer["request_id"], "arm": answer["arm"]}
    common["model_version"] = answer["model_version"]
    events = []
    for position, item in enumerate(reaction["item_ids"]):
        base = common | {"item_id": item, "position": position}
        events.append(base | {"event_type": "impression", "timestamp": at.isoformat()})
        for step, (name, delay) in enumerate(zip(("click", "cart", "purchase"), FUNNEL_DELAYS, strict=True)):
            if reaction["stage"][position] <= step:
                break
            event = base | {"event_type": name, "timestamp": (at + timedelta(seconds=delay)).isoformat()}
            if name == "purchase":
                price = reaction["price"][position]
                if price is None:  # no price anywhere: the purchase cannot carry an order value
                    break
                quantity = int(reaction["quantity"][position])
                event |= {"quantity": quantity, "order_value": round(price * quantity, 2)}
            events.append(event)
    for event in events:
        event["event_id"] = uuid.uuid4().hex
    return events


# ------------------------------------------------------------------------------------------ the client


@contextmanager
def open_client(url: str | None = None, run_cfg: RunConfig | None = None) -> Iterator[Any]:
    """An HTTP client on the API: ``httpx`` to ``url``, or the app of ``run_cfg`` in this process."""
    if url:
        import httpx

        with httpx.Client(base_url=url.rstrip("/"), timeout=30.0) as client:
            yield client
        return
    if run_cfg is None:
        raise SimulationError("give the API's URL, or a run config to serve the API in this process")
    from fastapi.testclient import TestClient

    from serving.app import create_app

    with TestClient(create_app(run_cfg)) as client:  # `with`: runs the app's start-up and shutdown
        yield client


def _request(client: Any, method: str, path: str, **kwargs: Any) -> Any:
    """One call with retries on 503 and dropped connections; other errors are raised to the caller."""
    import httpx

    for attempt in range(RETRIES + 1):
        try:
            response = client.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            if attempt == RETRIES:
                raise SimulationError(f"{method} {path}: the API is unreachable ({exc})") from exc
        else:
            if response.status_code != 503 or attempt == RETRIES:
                return response
        time.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")


def _post_events(client: Any, events: list[dict]) -> int:
    accepted = 0
    for start in range(0, len(events), MAX_BATCH):
        response = _request(client, "POST", "/events", json={"events": events[start : start + MAX_BATCH]})
        if response.status_code != 202:
            raise SimulationError(f"POST /events answered {response.status_code}: {response.text[:300]}")
        accepted += int(response.json()["accepted"])
    return accepted


# ------------------------------------------------------------------------------------------ the run


def simulate(cfg: SimulateConfig, client: Any, progress: bool = False) -> SimulateResult:
    """Run ``cfg.shoppers`` x ``cfg.visits`` visits against the API behind ``client`` (see the module doc)."""
    from tqdm import tqdm

    shop = Shop.load(cfg.shop)
    n_users = shop.truth.n_users
    pick = np.random.default_rng([cfg.seed, 0])
    users = pick.choice(n_users, cfg.shoppers, replace=cfg.shoppers > n_users)
    started = datetime.now(UTC)
    began = time.perf_counter()
    arms: dict[str, ArmCounts] = {}
    types = dict.fromkeys(("impression", "click", "cart", "purchase"), 0)
    experiments: set[str] = set()
    versions: set[str] = set()
    pending: list[dict] = []
    sent = accepted = failed = 0
    order = [(v, s) for v in range(cfg.visits) for s in range(cfg.shoppers)]
    bar = tqdm(order, unit="visit", file=sys.stderr, disable=not progress, desc="shoppers")
    for n, (round_, s) in enumerate(bar):
        user = int(users[s])
        raw = shop.user_id(user)
        response = _request(client, "GET", f"/recommendations/{raw}", params={"k": cfg.k, "explain": "false"})
        if response.status_code != 200:
            if response.status_code != 503 and response.status_code < 500:
                raise SimulationError(
                    f"GET /recommendations answered {response.status_code}: {response.text[:300]}"
                )
            failed += 1
            if failed == n + 1 and failed >= 5:
                raise SimulationError(f"the API answers {response.status_code}: {response.text[:300]}")
            continue
        answer = response.json()
        reaction = react(shop, user, answer, np.random.default_rng([cfg.seed, 1, round_, s]))
        events = visit_events(raw, answer, reaction, datetime.now(UTC))
        _count(arms.setdefault(answer["arm"], ArmCounts()), answer, reaction, events, types)
        experiments.update([answer["experiment"]] if answer.get("experiment") else [])
        versions.add(str(answer["model_version"]))
        pending += events
        if len(pending) >= cfg.batch:
            accepted += _post_events(client, pending)
            sent, pending = sent + len(pending), []
    if pending:
        accepted += _post_events(client, pending)
        sent += len(pending)
    seconds = time.perf_counter() - began
    visits = len(order) - failed
    return SimulateResult(
        shoppers=cfg.shoppers,
        visits=visits,
        failed_visits=failed,
        events_sent=sent,
        events_accepted=accepted,
        event_types=types,
        arms={name: _arm_dict(c) for name, c in sorted(arms.items())},
        experiments=sorted(experiments),
        model_versions=sorted(versions),
        seconds=round(seconds, 2),
        visits_per_second=round(visits / seconds, 1) if seconds else 0.0,
        started_at=started.isoformat(),
        notes=[]
        if experiments
        else ["no experiment is running: every visit was answered by the live version"],
    )


def _count(
    c: ArmCounts, answer: dict[str, Any], reaction: dict[str, Any], events: list[dict], types: dict[str, int]
) -> None:
    c.visits += 1
    c.cold_starts += bool(answer.get("cold_start"))
    c.expected_clicks += reaction["expected_click"]
    c.expected_purchases += reaction["expected_purchase"]
    for event in events:
        kind = event["event_type"]
        types[kind] += 1
        setattr(c, kind + "s", getattr(c, kind + "s") + 1)
        c.revenue += event.get("order_value") or 0.0


def _arm_dict(c: ArmCounts) -> dict[str, float | None]:
    out: dict[str, float | None] = dict(vars(c))
    out["revenue"] = round(c.revenue, 2)
    for name in ("expected_clicks", "expected_purchases"):
        out[name] = round(getattr(c, name), 3)
    out["expected_ctr"] = None if c.expected_ctr is None else round(c.expected_ctr, 6)
    out["expected_cvr"] = None if c.expected_cvr is None else round(c.expected_cvr, 6)
    return out


def simulate_shoppers(
    cfg: SimulateConfig, url: str | None = None, run_cfg: RunConfig | None = None, progress: bool = False
) -> SimulateResult:
    """`simulate` against the API at ``url``, or against ``run_cfg``'s API served in this process."""
    with open_client(url, run_cfg) as client:
        return simulate(cfg, client, progress)
