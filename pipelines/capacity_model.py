"""The capacity model: power laws fitted to measured stage costs, projected to a target scale.

Each stage's cost (wall or CPU seconds, or memory above the interpreter's baseline) is modelled as
``y = a * x^b``, where ``x`` is the stage's *driver*: events, users, items, users + items, users x items (e.g.
EASE's memory grows with items^2, brute-force scoring with users x items) or events^2 / users (item
co-occurrences). ``a`` and ``b`` are the least-squares fit of ``log y = log a + b log x`` over the measured
sizes. A fit over one decade, projected over two or three more, is fragile, so every projection is also given
with the exponent the algorithm's complexity predicts, anchored at the largest measurement. Limits are per
node: 24 GB of RAM, a 24 h batch window.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

LIMIT_MEMORY_MB = 24 * 1024.0  # one node's RAM
LIMIT_SECONDS = 24 * 3600.0  # one nightly batch window
FLOOR = 1e-3  # measured values below this (0 s, 0 MB above the baseline) are fitted as this


@dataclass(frozen=True)
class Scale:
    """A data size: interaction events, distinct users and distinct items."""

    events: float
    users: float
    items: float

    @classmethod
    def along(cls, events: float, path: Scale) -> Scale:
        """The size with ``events`` events and ``path``'s users and items per event."""
        return cls(events, events * path.users / path.events, events * path.items / path.events)


DRIVERS: dict[str, Callable[[Scale], float]] = {
    "events": lambda s: s.events,
    "users": lambda s: s.users,
    "items": lambda s: s.items,
    "users+items": lambda s: s.users + s.items,
    "users*items": lambda s: s.users * s.items,
    "events^2/users": lambda s: s.events**2 / s.users,  # item co-occurrences: sum over users of |history|^2
}


@dataclass(frozen=True)
class PowerLaw:
    """``y = a * x^b``; ``r2`` is the coefficient of determination of the fit in log space."""

    a: float
    b: float
    r2: float

    def __call__(self, x: float) -> float:
        return self.a * x**self.b


def fit_power_law(x: Sequence[float], y: Sequence[float]) -> PowerLaw:
    """Least squares of ``log y`` on ``log x``; needs at least two distinct positive ``x``."""
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(f"need >= 2 paired points, got {len(x)} x and {len(y)} y")
    if min(x) <= 0:
        raise ValueError("x must be positive")
    lx = [math.log(v) for v in x]
    ly = [math.log(max(v, FLOOR)) for v in y]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    sxx = sum((v - mx) ** 2 for v in lx)
    if sxx == 0:
        raise ValueError("x must take at least two distinct values")
    b = sum((u - mx) * (v - my) for u, v in zip(lx, ly, strict=True)) / sxx
    log_a = my - b * mx
    residual = sum((v - log_a - b * u) ** 2 for u, v in zip(lx, ly, strict=True))
    total = sum((v - my) ** 2 for v in ly)
    r2 = 1.0 - residual / total if total > 0 else 1.0
    if abs(log_a) > 700:  # exp would overflow: x hardly varied against y
        raise ValueError(f"degenerate fit (b = {b:.3g}): x must vary over the points")
    return PowerLaw(math.exp(log_a), b, r2)


@dataclass(frozen=True)
class CostModel:
    """One resource of one stage: ``offset + law(driver(scale))``, and the complexity-exponent alternative
    ``offset + anchor_y * (x / anchor_x) ** theory_b`` anchored at the largest measurement."""

    driver: str
    law: PowerLaw
    theory_b: float
    anchor_x: float
    anchor_y: float
    offset: float = 0.0  # memory: the interpreter and libraries, which do not grow with the data

    def x(self, scale: Scale) -> float:
        return DRIVERS[self.driver](scale)

    def fitted(self, scale: Scale) -> float:
        return self.offset + self.law(self.x(scale))

    def theory(self, scale: Scale) -> float:
        return self.offset + max(self.anchor_y, FLOOR) * (self.x(scale) / self.anchor_x) ** self.theory_b

    def worst(self, scale: Scale) -> float:
        """The larger of the two projections: what to plan for."""
        return max(self.fitted(scale), self.theory(scale))


def cost_model(
    driver: str, scales: Sequence[Scale], values: Sequence[float], theory_b: float, offset: float = 0.0
) -> CostModel:
    """Fit ``values`` (measured at ``scales``) against ``driver``; ``offset`` is added to every projection."""
    if driver not in DRIVERS:
        raise ValueError(f"unknown driver {driver!r}; known: {', '.join(DRIVERS)}")
    xs = [DRIVERS[driver](s) for s in scales]
    top = max(range(len(xs)), key=xs.__getitem__)
    return CostModel(driver, fit_power_law(xs, values), theory_b, xs[top], values[top], offset)


def breaking_events(
    model: CostModel,
    limit: float,
    path: Scale,
    projection: str = "fitted",
    low: float = 1e3,
    high: float = 1e13,
) -> float | None:
    """Fewest events (users and items growing with them as in ``path``) at which the ``projection``
    ("fitted", "theory" or "worst") of ``model`` exceeds ``limit``, to 3 significant digits; ``low`` if it
    already does there, None if not even at ``high``."""
    cost = {"fitted": model.fitted, "theory": model.theory, "worst": model.worst}[projection]

    def over(events: float) -> bool:
        return cost(Scale.along(events, path)) > limit

    if over(low):
        return low
    if not over(high):
        return None
    lo, hi = math.log(low), math.log(high)
    while hi - lo > 1e-4:  # bisection in log space; costs grow with every driver
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if over(math.exp(mid)) else (mid, hi)
    return float(f"{math.exp(hi):.3g}")
