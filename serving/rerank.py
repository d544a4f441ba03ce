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


ItemInfo = tuple[list[Any], float, bool, bool]  # attrs, boost factor, blocked, out of stock


def item_view(catalogue: Mapping[str, list[Any]], rules: CompiledRules) -> dict[str, ItemInfo]:
    """The per-item half of ``select``, computed once per (version, rules) instead of once per request."""
    return {item: _info(item, attrs, rules) for item, attrs in catalogue.items()}


def _info(item: str, attrs: list[Any], rules: CompiledRules) -> ItemInfo:
    factor = rules.category_factor.get(attrs[CATEGORY], 1.0) * rules.brand_factor.get(attrs[BRAND], 1.0)
    return attrs, factor, item in rules.blocked, item in rules.out_of_stock


def select(
    candidates: Sequence[Sequence[Any]],
    view: Mapping[str, ItemInfo],
    filters: Filters,
    rules: CompiledRules,
    limit: int | None = None,
) -> list[list[Any]]:
    """The best ``limit`` candidates that pass the filters and the rules, best first, with boosted scores:
    ``[item, score, anchor, attrs]``. ``view`` is ``item_view`` of the version's catalogue and ``rules``.

    Candidates arrive best first, so the scan stops as soon as no later one can make the cut: at ``limit``
    survivors without boosts, and with boosts once even the largest factor could not lift the next raw score
    above the ``limit``-th boosted score so far."""
    exclude = filters.exclude
    check_stock = filters.in_stock
    categories = filters.categories
    low, high = filters.min_price, filters.max_price
    by_price = low is not None or high is not None
    boosting = bool(rules.category_factor or rules.brand_factor)
    top_factor = max([1.0, *rules.category_factor.values(), *rules.brand_factor.values()])
    best: list[float] = []  # min-heap of the ``limit`` largest boosted scores (boosting only)
    out = []
    for entry in candidates:
        item, score = entry[0], entry[1]
        if boosting and limit is not None and len(best) >= limit:
            ceiling = score * top_factor if score >= 0 else score / top_factor
            if ceiling < best[0]:
                break
        info = view.get(item) or _info(item, _UNKNOWN, rules)
        attrs, factor, blocked, out_of_stock = info
        if blocked or (check_stock and out_of_stock) or item in exclude:
            continue
        if categories and attrs[CATEGORY] not in categories:
            continue
        if by_price:
            price = attrs[PRICE]
            if price is None or (low is not None and price < low) or (high is not None and price > high):
                continue
        if factor != 1.0:
            score = score * factor if score >= 0 else score / factor
        if boosting and limit is not None:
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

    Relevance is the score min-max scaled over the candidates; λ = ``strength`` (0 keeps the ranking); items
    without a category never count as repeats. With a 0/1 similarity each step has only two contenders: the
    best remaining item, and the best remaining item of a category not shown yet — two pointers that only move
    forward, so a request costs one pass over the list.
    """
    if strength <= 0 or len(ranked) <= 1:
        return ranked[:k]
    n = len(ranked)
    low = min(e[1] for e in ranked)
    scale = (1 - strength) / ((ranked[0][1] - low) or 1.0)
    taken = [False] * n
    shown: set[Any] = set()
    picked: list[list[Any]] = []
    first = fresh = 0  # first untaken item; first untaken item of a category not shown yet
    while len(picked) < k:
        while first < n and taken[first]:
            first += 1
        if first == n:
            break
        while fresh < n and (taken[fresh] or ranked[fresh][3][CATEGORY] in shown):
            fresh += 1
        category = ranked[first][3][CATEGORY]
        choice = first
        if category in shown and fresh < n:
            repeat = scale * (ranked[first][1] - low) - strength
            if scale * (ranked[fresh][1] - low) > repeat:
                choice = fresh
        taken[choice] = True
        picked.append(ranked[choice])
        if ranked[choice][3][CATEGORY] is not None:
            shown.add(ranked[choice][3][CATEGORY])
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
