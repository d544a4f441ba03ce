"""Selection: a fusion replaces the best single model only when it is better, and reliably so."""

from __future__ import annotations

import pytest

from pipelines.fuse import select

CANDIDATES = {"ease": {"ndcg@10": 0.30}, "ials": {"ndcg@10": 0.32}, "blend": {"ndcg@10": 0.33}}


def ci(low: float, high: float) -> dict[str, float]:
    return {"difference": (low + high) / 2, "low": low, "high": high}


@pytest.mark.parametrize(
    ("interval", "significance", "expected", "says"),
    [
        (ci(0.002, 0.018), True, "blend", "highest validation ndcg@10: blend 0.3300 vs ials"),
        (ci(-0.004, 0.024), True, "ials", "within noise"),
        (ci(-0.004, 0.024), False, "blend", "highest validation"),
    ],
)
def test_fusion_needs_a_reliable_gain(interval, significance: bool, expected: str, says: str) -> None:
    selected, reason = select(CANDIDATES, ["ease", "ials"], interval, 10, significance)
    assert selected == expected and says in reason and "95% CI" in reason


def test_a_worse_fusion_is_never_selected() -> None:
    worse = CANDIDATES | {"blend": {"ndcg@10": 0.31}}
    selected, reason = select(worse, ["ease", "ials"], ci(-0.02, 0.0), 10, False)
    assert selected == "ials" and "no fusion did better" in reason


def test_without_fusions_the_best_single_model_wins() -> None:
    selected, reason = select({"ease": {"ndcg@10": 0.3}}, ["ease"], None, 10, True)
    assert (selected, reason) == ("ease", "best single model by validation ndcg@10 0.3000")
