"""A/B assignment by hashing and Thompson sampling."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from serving.experiments import Arm, ExperimentError, ThompsonSampler, assign_arm, user_position

ARMS = [Arm("champion", 0.8), Arm("challenger", 0.2)]
USERS = [f"user-{i}" for i in range(20_000)]


def test_a_user_always_gets_the_same_arm() -> None:
    first = [assign_arm(u, ARMS, "exp-1") for u in USERS[:500]]
    assert first == [assign_arm(u, ARMS, "exp-1") for u in USERS[:500]]


def test_shares_follow_the_weights() -> None:
    counts = Counter(assign_arm(u, ARMS, "exp-1") for u in USERS)
    assert abs(counts["challenger"] / len(USERS) - 0.2) < 0.01  # binomial sd is 0.003


def test_a_new_salt_reshuffles_users_independently() -> None:
    a = np.array([assign_arm(u, ARMS, "exp-1") == "challenger" for u in USERS])
    b = np.array([assign_arm(u, ARMS, "exp-2") == "challenger" for u in USERS])
    both = (a & b).mean()
    assert abs(both - 0.2 * 0.2) < 0.01  # independent: 4% in both, not 20%


def test_growing_an_arm_only_moves_users_into_it() -> None:
    small = {u: assign_arm(u, [Arm("control", 0.9), Arm("test", 0.1)], "s") for u in USERS}
    large = {u: assign_arm(u, [Arm("control", 0.7), Arm("test", 0.3)], "s") for u in USERS}
    assert all(large[u] == "test" for u, arm in small.items() if arm == "test")  # nobody leaves "test"


def test_zero_weight_arm_gets_nobody_and_positions_are_in_range() -> None:
    assert {assign_arm(u, [Arm("a", 1.0), Arm("b", 0.0)], "s") for u in USERS[:2000]} == {"a"}
    positions = [user_position(u, "s") for u in USERS[:2000]]
    assert min(positions) >= 0.0 and max(positions) < 1.0


@pytest.mark.parametrize(
    ("arms", "message"),
    [
        ([], "at least one arm"),
        ([Arm("a", 1.0), Arm("a", 1.0)], "arm names repeat: a"),
        ([Arm("a", -1.0), Arm("b", 1.0)], ">= 0"),
        ([Arm("a", 0.0)], "above 0"),
        ([Arm("a", float("nan"))], "finite"),
    ],
)
def test_bad_set_ups_are_refused(arms: list[Arm], message: str) -> None:
    with pytest.raises(ExperimentError, match=message):
        assign_arm("u", arms, "s")


def test_thompson_shifts_traffic_toward_the_better_arm() -> None:
    sampler = ThompsonSampler(["champion", "challenger"])
    even = {a.name: a.weight for a in sampler.weights()}
    assert abs(even["champion"] - 0.5) < 0.05  # no evidence: an even split
    sampler.update("champion", successes=300, trials=10_000)  # 3% CTR
    sampler.update("challenger", successes=450, trials=10_000)  # 4.5% CTR
    shares = {a.name: a.weight for a in sampler.weights(floor=0.05)}
    assert shares["challenger"] > 0.9 and shares["champion"] == pytest.approx(0.05, abs=0.01)
    assert sum(shares.values()) == pytest.approx(1.0)


def test_thompson_stays_undecided_on_equal_evidence_and_checks_updates() -> None:
    sampler = ThompsonSampler(["a", "b"])
    sampler.update("a", 50, 1000)
    sampler.update("b", 50, 1000)
    best = sampler.probability_best(draws=20_000)
    assert abs(best["a"] - 0.5) < 0.05
    with pytest.raises(ExperimentError, match="unknown arm"):
        sampler.update("c", 1, 2)
    with pytest.raises(ExperimentError, match="successes <= trials"):
        sampler.update("a", 5, 2)
