"""A/B experiments: which arm (champion, challenger, ...) answers a user, fixed splits or Thompson sampling.

Assignment is deterministic: ``sha256(salt:user_id)`` read as a number in [0, 1) falls into one arm's share of
the cumulative weights, so a user keeps their arm across requests, processes and restarts, and a new salt
(a new experiment) reshuffles everyone. Thompson sampling turns each arm's clicks and impressions into a
Beta posterior and sets the weights to the probability that the arm is best, which shifts traffic toward
the better arm as evidence comes in; users still hash into the (moving) shares.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

_SCALE = float(2**64)


class ExperimentError(ValueError):
    """An experiment set-up that cannot work (no arms, negative or all-zero weights, repeated names)."""


@dataclass(frozen=True)
class Arm:
    name: str  # e.g. "champion", "challenger", "popularity"
    weight: float  # share of traffic, relative to the other arms


def check_arms(arms: Sequence[Arm]) -> None:
    if not arms:
        raise ExperimentError("an experiment needs at least one arm")
    names = [a.name for a in arms]
    if len(set(names)) != len(names):
        raise ExperimentError(
            f"arm names repeat: {', '.join(sorted({n for n in names if names.count(n) > 1}))}"
        )
    if any(not np.isfinite(a.weight) or a.weight < 0 for a in arms):
        raise ExperimentError("arm weights must be finite and >= 0")
    if sum(a.weight for a in arms) <= 0:
        raise ExperimentError("at least one arm needs a weight above 0")


def user_position(user_id: str, salt: str) -> float:
    """The user's fixed place in [0, 1) for the experiment named by ``salt``."""
    digest = hashlib.sha256(f"{salt}:{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def assign_arm(user_id: str, arms: Sequence[Arm], salt: str) -> str:
    """The arm that answers ``user_id``: the one whose share of the cumulative weights holds its position."""
    check_arms(arms)
    weights = np.array([a.weight for a in arms], dtype=float)
    edges = np.cumsum(weights / weights.sum())
    index = int(np.searchsorted(edges, user_position(user_id, salt), side="right"))
    return arms[min(index, len(arms) - 1)].name


@dataclass
class ThompsonSampler:
    """Beta-Bernoulli Thompson sampling over arms on a binary reward (e.g. click per impression)."""

    arms: Sequence[str]
    prior: tuple[float, float] = (1.0, 1.0)  # Beta(alpha, beta) before any evidence
    successes: dict[str, int] = field(default_factory=dict)
    trials: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_arms([Arm(a, 1.0) for a in self.arms])
        for arm in self.arms:
            self.successes.setdefault(arm, 0)
            self.trials.setdefault(arm, 0)

    def update(self, arm: str, successes: int, trials: int) -> None:
        """Add ``successes`` out of ``trials`` for ``arm`` (e.g. clicks out of impressions)."""
        if arm not in self.trials:
            raise ExperimentError(f"unknown arm {arm!r}")
        if trials < 0 or not 0 <= successes <= trials:
            raise ExperimentError(f"need 0 <= successes <= trials, got {successes} of {trials}")
        self.successes[arm] += successes
        self.trials[arm] += trials

    def _posterior(self, arm: str) -> tuple[float, float]:
        alpha, beta = self.prior
        return alpha + self.successes[arm], beta + self.trials[arm] - self.successes[arm]

    def probability_best(self, draws: int = 4000, seed: int = 0) -> dict[str, float]:
        """For each arm, the posterior probability that its rate is the highest (Monte Carlo)."""
        rng = np.random.default_rng(seed)
        samples = np.column_stack([rng.beta(*self._posterior(a), size=draws) for a in self.arms])
        wins = np.bincount(samples.argmax(axis=1), minlength=len(self.arms)) / draws
        return {arm: float(w) for arm, w in zip(self.arms, wins, strict=True)}

    def weights(self, floor: float = 0.05, draws: int = 4000, seed: int = 0) -> list[Arm]:
        """Traffic shares: probability of being best, with at least ``floor`` per arm so none starves."""
        best = self.probability_best(draws, seed)
        raw = np.array([max(best[a], floor) for a in self.arms])
        return [Arm(a, float(w)) for a, w in zip(self.arms, raw / raw.sum(), strict=True)]


def traffic_shares(assignments: Mapping[str, int]) -> dict[str, float]:
    """Observed share of users per arm (for reports and checks)."""
    total = sum(assignments.values())
    return {arm: n / total for arm, n in assignments.items()} if total else {}
