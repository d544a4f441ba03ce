"""Per-request re-ranking: the fast MMR equals the textbook one, filters, boosts with early stop, pins."""

from __future__ import annotations

import random

import pytest

from serving.rerank import CATEGORY, Filters, diversify, item_view, pin, select
from serving.rules import MerchRules


def mmr_reference(ranked: list[list], k: int, strength: float) -> list[list]:
    """Textbook MMR: every step scores every remaining candidate."""
    low, high = min(e[1] for e in ranked), ranked[0][1]
    span = (high - low) or 1.0
    remaining, picked, shown = list(ranked), [], set()
    while remaining and len(picked) < k:

        def value(e: list) -> float:
            category = e[3][CATEGORY]
            return (1 - strength) * (e[1] - low) / span - strength * (
                category is not None and category in shown
            )

        best = max(remaining, key=value)  # first of the ties, like the ranked order
        picked.append(best)
        remaining.remove(best)
        if best[3][CATEGORY] is not None:
            shown.add(best[3][CATEGORY])
    return picked


@pytest.mark.parametrize("seed", range(200))
def test_fast_mmr_equals_the_textbook_one(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(2, 60)
    scores = sorted((rng.random() * rng.choice([1, 10]) for _ in range(n)), reverse=True)
    categories = [rng.choice(["a", "b", "c", "d", None]) for _ in range(n)]
    ranked = [
        [f"i{j}", s, None, [None, c, None, None]]
        for j, (s, c) in enumerate(zip(scores, categories, strict=True))
    ]
    k, strength = rng.randint(1, 15), rng.choice([0.1, 0.3, 0.5, 0.9, 1.0])
    assert [e[0] for e in diversify(ranked, k, strength)] == [
        e[0] for e in mmr_reference(ranked, k, strength)
    ]


CATALOGUE = {
    f"i{j}": [f"t{j}", "even" if j % 2 == 0 else "odd", "acme" if j < 5 else "bolt", float(j)]
    for j in range(20)
}


def ranked_ids(rules: MerchRules, limit: int | None = None, **filters) -> list[str]:
    compiled = rules.compiled()
    candidates = [[f"i{j}", 1.0 - 0.01 * j] for j in range(20)]
    out = select(candidates, item_view(CATALOGUE, compiled), Filters(**filters), compiled, limit)
    return [e[0] for e in out]


def test_select_applies_filters_and_stops_at_the_limit() -> None:
    assert ranked_ids(MerchRules(), 3) == ["i0", "i1", "i2"]
    assert ranked_ids(MerchRules(), 3, categories=frozenset({"odd"})) == ["i1", "i3", "i5"]
    assert ranked_ids(MerchRules(), None, min_price=17.5) == ["i18", "i19"]
    assert ranked_ids(MerchRules(), 2, exclude={"i0"}) == ["i1", "i2"]
    rules = MerchRules(out_of_stock=["i0"], blocked=[{"item": "i1"}])
    assert ranked_ids(rules, 2) == ["i2", "i3"]
    assert ranked_ids(rules, 2, in_stock=False) == ["i0", "i2"]


def test_boosted_early_stop_gives_the_same_top_as_a_full_scan() -> None:
    rules = MerchRules(boosts=[{"category": "odd", "factor": 1.05}, {"brand": "bolt", "factor": 0.5}])
    full = ranked_ids(rules, None)
    assert ranked_ids(rules, 4) == full[:4] == ["i1", "i3", "i0", "i2"]


def test_pins_take_their_slot_and_blocked_pins_are_dropped() -> None:
    rules = MerchRules(pins=[{"item": "i9", "slot": 1}, {"item": "i8", "slot": 3}], blocked=[{"item": "i8"}])
    compiled = rules.compiled()
    ranked = select([[f"i{j}", 1.0] for j in range(5)], item_view(CATALOGUE, compiled), Filters(), compiled)
    assert [e[0] for e in pin(ranked, compiled, CATALOGUE, 3)] == ["i9", "i0", "i1"]
