"""Per-request work on a user's short candidate list: filters, merchandising, diversity, explanations.

Pure functions over plain lists so a request costs microseconds: candidates come decoded from the store as
``[item, score(, anchor)]`` and the catalogue is the version context's ``items`` dict
(item -> [title, category, brand, price]).
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from serving.rules import CompiledRules

TITLE, CATEGORY, BRAND, PRICE = range(4)
_UNKNOWN: list[Any] = [None, None, None, None]


@dataclass(frozen=True)
class Filters:
    categories: frozenset[str] = frozenset()
    min_price: float | None = None
    max_price: float | None = None
    in_stock: bool = True
    exclude: Collection[str] = frozenset()  # already bought / dismissed by this user


def select(
    candidates: Sequence[Sequence[Any]],
    catalogue: Mapping[str, list[Any]],
    filters: Filters,
    rules: CompiledRules,
    limit: int | None = None,
) -> list[list[Any]]:
    """The best ``limit`` candidates that pass the filters and the rules, best first, with boosted scores:
    ``[item, score, anchor, attrs]``.

    Candidates arrive best first, so the scan stops as soon as no later one can make the cut: at ``limit``
    survivors without boosts, and with boosts once even the largest factor could not lift the next raw score
    above the ``limit``-th boosted score so far."""
    blocked, out_of_stock, exclude = rules.blocked, rules.out_of_stock, filters.exclude
    check_stock = filters.in_stock and bool(out_of_stock)
    categories = filters.categories
    low, high = filters.min_price, filters.max_price
    by_price = low is not None or high is not None
    category_factor, brand_factor = rules.category_factor, rules.brand_factor
    boosting = bool(category_factor or brand_factor)
    top_factor = max([1.0, *category_factor.values(), *brand_factor.values()])
    best: list[float] = []  # min-heap of the ``limit`` largest boosted scores (boosting only)
    out = []
    for entry in candidates:
        item, score = entry[0], entry[1]
        if boosting and limit is not None and len(best) >= limit:
            ceiling = score * top_factor if score >= 0 else score / top_factor
            if ceiling < best[0]:
                break
        if item in blocked or item in exclude or (check_stock and item in out_of_stock):
            continue
        attrs = catalogue.get(item, _UNKNOWN)
        if categories and attrs[CATEGORY] not in categories:
            continue
        if by_price:
            price = attrs[PRICE]
            if price is None or (low is not None and price < low) or (high is not None and price > high):
                continue
        if boosting:
            factor = category_factor.get(attrs[CATEGORY], 1.0) * brand_factor.get(attrs[BRAND], 1.0)
            score = score * factor if score >= 0 else score / factor
            if limit is not None:
                (heapq.heappush if len(best) < limit else heapq.heappushpop)(best, score)
        out.append([item, score, entry[2] if len(entry) > 2 else None, attrs])
        if not boosting and limit is not None and len(out) >= limit:
            break
    if boosting:
        out.sort(key=lambda e: -e[1])
        return out if limit is None else out[:limit]
    return out


def diversify(ranked: list[list[Any]], k: int, strength: float) -> list[list[Any]]:
    """Maximal marginal relevance over categories: pick by ``(1-λ)·relevance − λ·[category already shown]``.

    Relevance is the score min-max scaled over the candidates; λ = ``strength`` (0 keeps the ranking).
    With one category per item the similarity term is 0 or 1, so each step only compares the best remaining
    item of every category (O(k · categories) instead of O(k · candidates)).
    """
    if strength <= 0 or len(ranked) <= 1:
        return ranked[:k]
    high, low = ranked[0][1], min(e[1] for e in ranked)
    span = (high - low) or 1.0
    queues: dict[Any, list[list[Any]]] = {}
    for entry in ranked:  # already best-first, so each queue is too
        queues.setdefault(entry[3][CATEGORY], []).append(entry)
    heads = dict.fromkeys(queues, 0)
    shown: set[Any] = set()
    picked: list[list[Any]] = []
    while len(picked) < k and heads:
        best_value, best_category = None, None
        for category, head in heads.items():
            relevance = (queues[category][head][1] - low) / span
            value = (1 - strength) * relevance - strength * (category in shown and category is not None)
            if best_value is None or value > best_value:
                best_value, best_category = value, category
        picked.append(queues[best_category][heads[best_category]])
        shown.add(best_category)
        heads[best_category] += 1
        if heads[best_category] == len(queues[best_category]):
            del heads[best_category]
    return picked


def pin(ranked: list[list[Any]], rules: CompiledRules, catalogue: Mapping[str, list[Any]], k: int) -> list:
    """Put pinned items on their slots (moving them if already listed); slots beyond the list append."""
    if not rules.pins:
        return ranked[:k]
    pinned = {item for _, item in rules.pins}
    rest = [e for e in ranked if e[0] not in pinned]
    top = ranked[0][1] if ranked else 1.0
    for slot, item in rules.pins:
        if item in rules.blocked or slot > k:
            continue
        rest.insert(min(slot - 1, len(rest)), [item, top, None, catalogue.get(item, _UNKNOWN), "pinned"])
    return rest[:k]


def explanation(
    entry: list[Any], catalogue: Mapping[str, list[Any]], cold_start: bool, popular: Collection[str]
) -> dict[str, Any]:
    """Why this item: the anchor from the user's history (or, for a new user, the item they just looked
    at), its category's popularity, a pin, or the model's own taste match."""
    attrs = entry[3]
    if len(entry) > 4 and entry[4] == "pinned":
        return {"kind": "pinned", "text": "featured by the shop", "anchor_item": None}
    anchor = entry[2]
    if anchor is not None:
        kind = "similar" if cold_start else "viewed"
        name = catalogue.get(anchor, _UNKNOWN)[TITLE] or f"item {anchor}"
        text = f"similar to {name}" if cold_start else f"because you viewed {name}"
        return {"kind": kind, "text": text, "anchor_item": anchor}
    if cold_start or entry[0] in popular:
        where = attrs[CATEGORY] or "the shop"
        return {"kind": "popular", "text": f"popular in {where}", "anchor_item": None}
    return {"kind": "model", "text": "matches your tastes", "anchor_item": None}
