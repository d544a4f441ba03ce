"""Drift checks: profile a batch of interactions chunk by chunk and compare it with the last accepted batch.

In:  chunks of canonical interactions (pipelines/schema.py) fed to ``BatchProfile.update``;
     ``cfg.paths.data / drift / reference.json`` (the last accepted batch's profile, written by
     ``accept_reference``).
Out: ``cfg.paths.reports / drift.json`` (this run's result), a history copy ``cfg.paths.home / drift /
     <run label>.json`` and ``<run label>.png`` (new vs reference, the four distributions).

Four checks, each a population stability index (PSI) between two histograms over the same bins:
  event_type_mix   events per event type
  item_popularity  events on the union of both batches' top items, plus one "other" bin
  user_activity    users per log2 bin of events per user (1, 2-3, 4-7, ...)
  price            non-null prices over fixed log-spaced bins (4 per decade, 0.01 .. 1e6); nulls counted apart

Why PSI: one statistic for every binned distribution, symmetric, with the usual reading 0.1 = slight and
0.2 = large shift (``RunConfig.drift_threshold``), and unlike a KS or chi-square p-value it does not call
every tiny shift significant on 10M rows. Empty bins get a share of ``EPSILON`` so the logarithm is finite.
Its noise floor is about (bins - 1) * (1/n_new + 1/n_ref): negligible for shop batches, ~0.05 for 1k rows.
Batches covering different time spans compare badly on user_activity (a two-week batch has more events per
user than a one-week one): the time ranges are in the report for that reason.

A profile is cheap and bounded: per chunk a factorize + bincount of user and item ids (memory: distinct ids)
and a bincount of price bins; 10M rows with object-string ids take ~2.5-3 s of CPU. Its JSON form is compact and holds no user id: the top ``TOP_ITEMS_STORED``
items with their counts, the activity histogram, price bins, event counts, row counts and time range.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fusionrec.config import RunConfig
from pipelines.stage import StageInputError, StageResult
from pipelines.stage import run_label as stage_run_label

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1  # of the JSON profile; a change of bins is a new version
EPSILON = 1e-4  # share given to an empty bin in the PSI
TOP_ITEMS_COMPARED = 20  # item_popularity bins: the union of each side's top items, plus "other"
TOP_ITEMS_STORED = 1000  # items kept in a stored profile (the rest are "other")
ACTIVITY_BINS = 21  # events per user: [1], [2,3], [4,7], ..., [2^20, inf)
PRICE_LOG_MIN, PRICE_LOG_MAX, PRICE_BINS_PER_DECADE = -2, 6, 4
PRICE_EDGES = 10.0 ** np.linspace(
    PRICE_LOG_MIN, PRICE_LOG_MAX, (PRICE_LOG_MAX - PRICE_LOG_MIN) * PRICE_BINS_PER_DECADE + 1
)
PRICE_BINS = len(PRICE_EDGES) + 1  # below the first edge, between edges, from the last edge on
CHECKS = ("event_type_mix", "item_popularity", "user_activity", "price")
STATISTIC = "psi"


class DataDriftError(Exception):
    """The new batch drifted from the last accepted one and ``drift_action`` is "fail"; the message is one
    line naming the drifted checks and where the report is."""


# ---------------------------------------------------------------- the profile


class _IdCounts:
    """Events per id, accumulated chunk by chunk: per-chunk counts wait in a list and are merged in one
    groupby once ``MERGE_AT`` of them pile up (merging per chunk, or looking ids up in a dict or an Index, was
    2-4x slower on 100k-row chunks). Memory: the distinct ids plus at most ``MERGE_AT`` waiting pairs."""

    MERGE_AT = 2_000_000

    def __init__(self) -> None:
        self._parts: list[pd.Series] = []
        self._waiting = 0

    def add(self, ids: pd.Series) -> None:
        codes, uniques = pd.factorize(ids)  # 2-3x faster than value_counts on object strings; nulls are -1
        counts = np.bincount(codes + 1, minlength=len(uniques) + 1)[1:]
        self._parts.append(pd.Series(counts, index=uniques, dtype=np.int64))
        self._waiting += len(uniques)
        if self._waiting > max(self.MERGE_AT, len(self._parts[0])):
            self.counts()

    def counts(self) -> pd.Series:
        """Events per id (unordered), int64."""
        if not self._parts:
            return pd.Series(dtype=np.int64)
        if len(self._parts) > 1:
            merged = pd.concat(self._parts).groupby(level=0, sort=False, observed=True).sum()
            self._parts, self._waiting = [merged], 0
        return self._parts[0]


class BatchProfile:
    """What the drift checks need to know about one batch of interactions.

    Build with ``update(chunk)`` per chunk of canonical interactions (any chunking gives the same profile), or
    load a stored one with ``from_dict``; a loaded profile is a summary and takes no more chunks. Columns a
    chunk lacks (e.g. no ``price``) are simply not profiled.
    """

    def __init__(self) -> None:
        self.rows = 0
        self.first_event: pd.Timestamp | None = None
        self.last_event: pd.Timestamp | None = None
        self.event_types: Counter[str] = Counter()
        self.price_rows = 0  # rows of chunks that had a price column
        self.price_nulls = 0
        self.price_sum = 0.0
        self.price_bins = np.zeros(PRICE_BINS, dtype=np.int64)
        self._items: _IdCounts | None = _IdCounts()
        self._users: _IdCounts | None = _IdCounts()
        # A loaded profile keeps only these summaries of the id counts.
        self._top_items = pd.Series(dtype=np.int64)
        self._item_summary = (0, 0)  # (distinct items, events with an item)
        self._activity = np.zeros(ACTIVITY_BINS, dtype=np.int64)
        self._user_summary = (0, 0)  # (distinct users, events with a user)

    def update(self, chunk: pd.DataFrame) -> None:
        """Add one chunk of interactions."""
        if self._items is None or self._users is None:
            raise ValueError("a profile loaded with from_dict is a summary: build a new one to add rows")
        self.rows += len(chunk)
        if "timestamp" in chunk:
            self._add_times(chunk["timestamp"])
        if "event_type" in chunk:
            self.event_types.update(chunk["event_type"].value_counts().to_dict())
        if "item_id" in chunk:
            self._items.add(chunk["item_id"])
        if "user_id" in chunk:
            self._users.add(chunk["user_id"])
        if "price" in chunk:
            self._add_prices(chunk["price"])

    def _add_times(self, timestamps: pd.Series) -> None:
        first, last = timestamps.min(), timestamps.max()
        if pd.notna(first):
            self.first_event = first if self.first_event is None else min(self.first_event, first)
            self.last_event = last if self.last_event is None else max(self.last_event, last)

    def _add_prices(self, prices: pd.Series) -> None:
        values = pd.to_numeric(prices, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        known = values[~np.isnan(values)]
        self.price_rows += len(values)
        self.price_nulls += len(values) - len(known)
        self.price_sum += float(known.sum())
        self.price_bins += np.bincount(price_bin(known), minlength=PRICE_BINS)

    # -- what the checks read

    def item_counts(self) -> pd.Series:
        """Events per item, most popular first (ties by item id); a loaded profile has its top items only."""
        if self._items is None:
            return self._top_items
        counts = self._items.counts()
        counts = counts.set_axis(counts.index.astype(str)).sort_index()  # ties by id, whatever the id dtype
        return counts.sort_values(ascending=False, kind="stable")

    def item_summary(self) -> tuple[int, int]:
        """(distinct items, events with an item id)."""
        if self._items is None:
            return self._item_summary
        counts = self._items.counts()
        return len(counts), int(counts.sum())

    def user_activity(self) -> np.ndarray:
        """Users per log2 bin of their number of events (``ACTIVITY_BINS`` counts)."""
        if self._users is None:
            return self._activity
        counts = self._users.counts().to_numpy()
        bins = np.frexp(counts)[1] - 1  # floor(log2(n)), exact for integers
        return np.bincount(np.minimum(bins, ACTIVITY_BINS - 1), minlength=ACTIVITY_BINS).astype(np.int64)

    def user_summary(self) -> tuple[int, int]:
        """(distinct users, events with a user id)."""
        if self._users is None:
            return self._user_summary
        counts = self._users.counts()
        return len(counts), int(counts.sum())

    def time_range(self) -> tuple[str | None, str | None]:
        return (
            self.first_event.isoformat() if self.first_event is not None else None,
            self.last_event.isoformat() if self.last_event is not None else None,
        )

    # -- JSON

    def to_dict(self, top_items: int = TOP_ITEMS_STORED) -> dict[str, Any]:
        """Compact JSON-friendly summary (no user ids): ~``top_items`` item counts and a few histograms."""
        first, last = self.time_range()
        n_items, item_events = self.item_summary()
        n_users, user_events = self.user_summary()
        top = self.item_counts().head(top_items)
        return {
            "version": FORMAT_VERSION,
            "rows": self.rows,
            "first_event": first,
            "last_event": last,
            "event_types": dict(sorted(self.event_types.items())),
            "items": {
                "distinct": n_items,
                "events": item_events,
                "top": {str(k): int(v) for k, v in top.items()},
            },
            "users": {
                "distinct": n_users,
                "events": user_events,
                "activity": self.user_activity().tolist(),
            },
            "price": {
                "rows": self.price_rows,
                "nulls": self.price_nulls,
                "sum": self.price_sum,
                "bins": self.price_bins.tolist(),
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BatchProfile:
        """A profile stored with ``to_dict`` (a summary: ``update`` refuses it)."""
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(f"drift profile version {data.get('version')!r}, expected {FORMAT_VERSION}")
        profile = cls()
        profile._items = profile._users = None
        profile.rows = int(data["rows"])
        for name in ("first_event", "last_event"):
            if data[name] is not None:
                setattr(profile, name, pd.Timestamp(data[name]))
        profile.event_types = Counter({str(k): int(v) for k, v in data["event_types"].items()})
        items, users, price = data["items"], data["users"], data["price"]
        profile._top_items = pd.Series(items["top"], dtype=np.int64)
        profile._item_summary = (int(items["distinct"]), int(items["events"]))
        profile._activity = np.asarray(users["activity"], dtype=np.int64)
        profile._user_summary = (int(users["distinct"]), int(users["events"]))
        profile.price_rows, profile.price_nulls = int(price["rows"]), int(price["nulls"])
        profile.price_sum = float(price["sum"])
        profile.price_bins = np.asarray(price["bins"], dtype=np.int64)
        return profile


def price_bin(prices: np.ndarray) -> np.ndarray:
    """Bin index of each price: 0 below 0.01 (free, negative), then 4 per decade, last from 1e6 on."""
    logs = np.log10(np.maximum(prices, 1e-300))
    bins = np.floor((logs - PRICE_LOG_MIN) * PRICE_BINS_PER_DECADE) + 1
    return np.clip(bins, 0, PRICE_BINS - 1).astype(np.intp)


def _price_labels() -> list[str]:
    edges = [
        f"{e / 1e6:.3g}M" if e >= 1e6 else f"{e / 1e3:.3g}k" if e >= 1e3 else f"{e:.3g}" for e in PRICE_EDGES
    ]
    return (
        [f"<{edges[0]}"] + [f"{a}-{b}" for a, b in zip(edges, edges[1:], strict=False)] + [f">={edges[-1]}"]
    )


def _activity_labels() -> list[str]:
    labels = ["1"] + [f"{2**k}-{2 ** (k + 1) - 1}" for k in range(1, ACTIVITY_BINS - 1)]
    return labels + [f">={2 ** (ACTIVITY_BINS - 1)}"]


# ---------------------------------------------------------------- comparing two profiles


@dataclass(frozen=True)
class Histograms:
    """One dimension of both batches over the same bins (counts)."""

    labels: list[str]
    new: np.ndarray
    reference: np.ndarray


@dataclass
class DriftCheck:
    name: str  # one of CHECKS
    statistic: str  # "psi"
    value: float | None  # None when skipped
    threshold: float
    drifted: bool
    detail: str  # the bins that moved most and a few plain numbers, for a human
    skipped: bool = False  # a side has no data for this dimension (e.g. no price column)


@dataclass
class DriftReport:
    checks: list[DriftCheck]
    new_rows: int
    reference_rows: int
    new_range: tuple[str | None, str | None]
    reference_range: tuple[str | None, str | None]

    @property
    def drifted(self) -> list[DriftCheck]:
        return [c for c in self.checks if c.drifted]


def psi(new: np.ndarray, reference: np.ndarray) -> float:
    """Population stability index sum((p - q) * ln(p / q)) of two count vectors; empty bins count EPSILON."""
    p = np.maximum(new / new.sum(), EPSILON)
    q = np.maximum(reference / reference.sum(), EPSILON)
    return float(np.sum((p - q) * np.log(p / q)))


def histograms(new: BatchProfile, reference: BatchProfile) -> dict[str, Histograms]:
    """Both profiles binned alike, one entry per check (in ``CHECKS`` order)."""
    kinds = sorted(set(new.event_types) | set(reference.event_types))
    return {
        "event_type_mix": Histograms(
            kinds,
            np.array([new.event_types[k] for k in kinds], dtype=np.int64),
            np.array([reference.event_types[k] for k in kinds], dtype=np.int64),
        ),
        "item_popularity": _item_histograms(new, reference),
        "user_activity": Histograms(_activity_labels(), new.user_activity(), reference.user_activity()),
        "price": Histograms(_price_labels(), new.price_bins, reference.price_bins),
    }


def _item_histograms(new: BatchProfile, reference: BatchProfile) -> Histograms:
    """Events on the union of both sides' top items, then "other". An item outside a stored profile's top
    ``TOP_ITEMS_STORED`` counts as "other" there (it holds a negligible share)."""
    new_counts, ref_counts = new.item_counts(), reference.item_counts()
    top = list(
        dict.fromkeys([*ref_counts.index[:TOP_ITEMS_COMPARED], *new_counts.index[:TOP_ITEMS_COMPARED]])
    )

    def side(counts: pd.Series, events: int) -> np.ndarray:
        on_top = counts.reindex(top, fill_value=0).to_numpy(dtype=np.int64)
        return np.append(on_top, events - on_top.sum()) if events else np.zeros(len(top) + 1, np.int64)

    return Histograms(
        [str(i) for i in top] + ["other"],
        side(new_counts, new.item_summary()[1]),
        side(ref_counts, reference.item_summary()[1]),
    )


def compare(new: BatchProfile, reference: BatchProfile, threshold: float) -> DriftReport:
    """One PSI check per dimension; a dimension with no data on either side is skipped (not drifted)."""
    checks = [
        _check(name, hist, threshold, _context(name, new, reference))
        for name, hist in histograms(new, reference).items()
    ]
    return DriftReport(checks, new.rows, reference.rows, new.time_range(), reference.time_range())


def _check(name: str, hist: Histograms, threshold: float, context: str) -> DriftCheck:
    empty = [
        side for side, counts in (("new batch", hist.new), ("reference", hist.reference)) if counts.sum() == 0
    ]
    if empty:
        detail = f"skipped: no {name.replace('_', ' ')} data in the {' and the '.join(empty)}"
        return DriftCheck(name, STATISTIC, None, threshold, drifted=False, detail=detail, skipped=True)
    value = psi(hist.new, hist.reference)
    return DriftCheck(name, STATISTIC, value, threshold, value > threshold, _moves(hist) + context)


def _moves(hist: Histograms, show: int = 3) -> str:
    """The bins contributing most to the PSI, as "label: ref share -> new share"."""
    p, q = hist.new / hist.new.sum(), hist.reference / hist.reference.sum()
    pe, qe = np.maximum(p, EPSILON), np.maximum(q, EPSILON)
    order = np.argsort(-((pe - qe) * np.log(pe / qe)), kind="stable")[:show]
    return ", ".join(f"{hist.labels[i]}: {q[i]:.1%} -> {p[i]:.1%}" for i in order)


def _context(name: str, new: BatchProfile, reference: BatchProfile) -> str:
    """Plain numbers beside the PSI (reference -> new)."""
    if name == "item_popularity":
        (n_new, _), (n_ref, _) = new.item_summary(), reference.item_summary()
        return f"; distinct items {n_ref:,} -> {n_new:,}"
    if name == "user_activity":
        (u_new, e_new), (u_ref, e_ref) = new.user_summary(), reference.user_summary()
        per_user = f"{e_ref / max(u_ref, 1):.1f} -> {e_new / max(u_new, 1):.1f}"
        return f"; users {u_ref:,} -> {u_new:,}, events per user {per_user}"
    if name == "price":
        return f"; mean price {_mean_price(reference):.2f} -> {_mean_price(new):.2f}, null share " + (
            f"{_null_share(reference):.1%} -> {_null_share(new):.1%}"
        )
    return ""


def _mean_price(profile: BatchProfile) -> float:
    known = profile.price_rows - profile.price_nulls
    return profile.price_sum / known if known else math.nan


def _null_share(profile: BatchProfile) -> float:
    return profile.price_nulls / profile.price_rows if profile.price_rows else math.nan


# ---------------------------------------------------------------- the stage


@dataclass
class DriftResult(StageResult):
    status: str  # "ok" | "drifted" | "no_reference" (first batch) | "skipped" (drift_action "off")
    action: str  # cfg.drift_action
    threshold: float
    message: str
    checks: list[DriftCheck] = field(default_factory=list)
    new_rows: int = 0
    new_range: tuple[str | None, str | None] = (None, None)
    reference_rows: int | None = None
    reference_range: tuple[str | None, str | None] | None = None
    reference_run: str | None = None  # run label of the batch that became the reference
    reference: str = ""  # path of the reference profile
    report: str = ""  # path of this result (reports/drift.json)
    history: str | None = None  # path of the history copy
    plot: str | None = None  # PNG of the four distributions, new vs reference

    @property
    def drifted(self) -> list[DriftCheck]:
        return [c for c in self.checks if c.drifted]


def reference_path(cfg: RunConfig) -> Path:
    return cfg.paths.data / "drift" / "reference.json"


def run_label(cfg: RunConfig) -> str:
    """The run's file-safe label (validate fixes one per run, so GX, drift and the reference agree)."""
    return stage_run_label(cfg.run_id)


def check_drift(cfg: RunConfig, profile: BatchProfile) -> DriftResult:
    """Compare ``profile`` (the new batch) with the last accepted batch and record the result.

    Writes ``reports/drift.json`` and, unless ``drift_action`` is "off", ``home/drift/<run label>.json`` (+ a
    PNG when there is a reference). A drifted check raises ``DataDriftError`` under "fail" and logs a warning
    under "warn"; "off" compares nothing and returns a result with status "skipped".
    """
    reports = cfg.paths.reports
    result = DriftResult(
        status="skipped",
        action=cfg.drift_action,
        threshold=cfg.drift_threshold,
        message="drift checks off (drift_action 'off')",
        new_rows=profile.rows,
        new_range=profile.time_range(),
        reference=str(reference_path(cfg)),
        report=str(reports / "drift.json"),
    )
    if cfg.drift_action == "off":
        result.save(reports, "drift")
        return result
    label = run_label(cfg)
    history = cfg.paths.home / "drift" / f"{label}.json"
    stored = _load_reference(reference_path(cfg))
    if stored is None:
        result = replace(
            result, status="no_reference", message="no reference: first batch", history=str(history)
        )
    else:
        reference_run, reference = stored
        report = compare(profile, reference, cfg.drift_threshold)
        result = replace(
            result,
            status="drifted" if report.drifted else "ok",
            message=_summary(report.drifted, cfg.drift_threshold, reports / "drift.json", reference_run),
            checks=report.checks,
            reference_rows=report.reference_rows,
            reference_range=report.reference_range,
            reference_run=reference_run,
            history=str(history),
            plot=str(plot_drift(histograms(profile, reference), report, history.with_suffix(".png"))),
        )
    result.save(reports, "drift")
    result.save(history.parent, label)
    _act(cfg, result)
    return result


def _summary(drifted: list[DriftCheck], threshold: float, report: Path, reference_run: str | None) -> str:
    against = f"the batch of run {reference_run}" if reference_run else "the last accepted batch"
    if not drifted:
        return f"no drift against {against} (PSI <= {threshold:g} on every check)"
    checks = ", ".join(f"{c.name} PSI {c.value:.3f}" for c in drifted)
    return f"data drift against {against}: {checks} > {threshold:g} (report: {report})"


def _act(cfg: RunConfig, result: DriftResult) -> None:
    if result.status != "drifted":
        logger.info("drift: %s", result.message)
    elif cfg.drift_action == "fail":
        raise DataDriftError(result.message)
    else:
        logger.warning("drift: %s", result.message)


def _load_reference(path: Path) -> tuple[str | None, BatchProfile] | None:
    """(run label, profile) of the last accepted batch, or None before the first one."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        return data.get("run"), BatchProfile.from_dict(data["profile"])
    except (ValueError, KeyError, TypeError) as error:
        raise StageInputError(
            f"drift reference {path} is unreadable ({error}); delete it to start again from the next batch"
        ) from error


def accept_reference(cfg: RunConfig, profile: BatchProfile) -> None:
    """Make ``profile`` the reference of the next drift check (call only once the batch was accepted)."""
    path = reference_path(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "run": run_label(cfg),
        "accepted_at": datetime.now(UTC).isoformat(),
        "profile": profile.to_dict(),
    }
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, path)  # a crash mid-write leaves the old reference, never half a file


# ---------------------------------------------------------------- the picture


def plot_drift(hists: dict[str, Histograms], report: DriftReport, path: Path) -> Path:
    """2x2 PNG: each dimension's shares, reference vs new, titled with its PSI."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(13, 8), layout="constrained")
    FigureCanvasAgg(figure)
    checks = {c.name: c for c in report.checks}
    for axes, (name, hist) in zip(figure.subplots(2, 2).flat, hists.items(), strict=True):
        _plot_one(axes, hist, checks[name])
    figure.suptitle(
        f"Drift: new batch ({report.new_rows:,} rows) vs reference ({report.reference_rows:,} rows)"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    return path


def _plot_one(axes: Any, hist: Histograms, check: DriftCheck) -> None:
    shares = [c / c.sum() if c.sum() else c.astype(float) for c in (hist.reference, hist.new)]
    used = np.flatnonzero((hist.reference + hist.new) > 0)
    keep = np.arange(used[0], used[-1] + 1) if len(used) else np.arange(len(hist.labels))
    x = np.arange(len(keep))
    for offset, share, label, colour in (
        (-0.2, shares[0], "reference", "#a6a6a6"),
        (0.2, shares[1], "new", "#1f4e79"),
    ):
        axes.bar(x + offset, share[keep], width=0.4, label=label, color=colour)
    axes.set_xticks(x, [hist.labels[i][:14] for i in keep], rotation=60, ha="right", fontsize=7)
    axes.set_ylabel("share")
    verdict = "skipped" if check.skipped else f"PSI {check.value:.3f}" + (" DRIFTED" if check.drifted else "")
    axes.set_title(f"{check.name}: {verdict}", color="#c00000" if check.drifted else "black")
    axes.legend(fontsize=8)
