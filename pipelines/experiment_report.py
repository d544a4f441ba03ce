"""Experiment report: CTR, CVR, order value and the funnel of each arm of an A/B test, from the feedback events.

Counts (per arm, from the events that carry an ``arm``): users, impressions, clicks, carts, purchases, dismisses
and revenue (the purchases' ``order_value``). An event tied to a request counts once per (request, item, type),
so a double click on one recommendation is one click.

Metrics: CTR = clicks / impressions, CVR = purchases / impressions, click-to-purchase = purchases / clicks,
order value = revenue / purchases with a value, revenue per user = revenue / users.

Statistics, at 95%:
- an arm's rates get Wilson score intervals; its means (order value, revenue per user) t-intervals;
- the lift of an arm over the reference arm (absolute and relative) gets a percentile interval from a seeded
  bootstrap over *users*, resampled within each arm. Users, not impressions, are what the experiment randomises,
  and one shopper's impressions are correlated (a keen shopper clicks a lot in either arm), so an
  impression-level interval would be too narrow;
- significance: for rates the two-proportion z-test (``p_value``; it treats impressions as independent, so it
  is optimistic when shoppers differ) and a user-level z-test whose variance comes from the delta method for
  ratio metrics (``p_value_users``, Deng et al. 2018; it agrees with the bootstrap interval); for order value
  Welch's t-test over purchases, for revenue per user Welch's t-test over users.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from fusionrec.config import RunConfig
from pipelines.stage import StageInputError, StageResult

CONFIDENCE = 0.95
RESAMPLES = 2000
FUNNEL = ("impression", "click", "cart", "purchase")
RATES = {  # metric: (numerator, denominator) columns of the per-user table
    "ctr": ("clicks", "impressions"),
    "cvr": ("purchases", "impressions"),
    "click_to_purchase": ("purchases", "clicks"),
}
MEANS = {"order_value": ("revenue", "orders"), "revenue_per_user": ("revenue", "users")}
COUNTS = ("impressions", "clicks", "carts", "purchases", "dismisses", "revenue", "orders")
_COLUMN = {"impression": "impressions", "click": "clicks", "cart": "carts", "purchase": "purchases"}
_COLUMN["dismiss"] = "dismisses"
DEFAULT_REFERENCE = "popularity"


@dataclass
class Estimate:
    value: float | None
    low: float | None = None
    high: float | None = None


@dataclass
class ArmSummary:
    arm: str
    users: int
    impressions: int
    clicks: int
    carts: int
    purchases: int
    dismisses: int
    revenue: float
    ctr: Estimate
    cvr: Estimate
    click_to_purchase: Estimate
    order_value: Estimate  # per purchase with a value
    revenue_per_user: Estimate
    model_versions: list[str] = field(default_factory=list)


@dataclass
class Lift:
    arm: str
    reference: str
    metric: str  # ctr, cvr, click_to_purchase, order_value, revenue_per_user
    absolute: Estimate  # arm - reference, bootstrap CI over users
    relative: Estimate  # (arm - reference) / reference
    p_value: float | None
    test: str
    p_value_users: float | None = None  # rates: user-level z-test (delta method)


@dataclass
class ExperimentReport(StageResult):
    experiment: str | None
    reference: str | None
    since: str | None
    first_event: str | None
    last_event: str | None
    events: int  # events with an arm (the experiment's)
    events_without_arm: int
    arms: list[ArmSummary]
    lifts: list[Lift]
    confidence: float
    resamples: int
    markdown: str = ""
    plot: str | None = None
    path: str | None = None  # the JSON report


# ------------------------------------------------------------------------------------------ statistics


def wilson_interval(successes: int, trials: int, confidence: float = CONFIDENCE) -> Estimate:
    """Share ``successes / trials`` with its Wilson score interval (no value for zero trials)."""
    if trials <= 0:
        return Estimate(None)
    z = stats.norm.ppf(0.5 + confidence / 2)
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z / (1 + z * z / trials) * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    # The interval always holds p; clamping stops rounding (1e-17 at p = 0 or 1) from putting p outside it.
    return Estimate(p, float(min(p, max(0.0, centre - half))), float(max(p, min(1.0, centre + half))))


def t_interval(values: np.ndarray, confidence: float = CONFIDENCE) -> Estimate:
    """Mean of ``values`` with its Student t interval (no interval below two values)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return Estimate(None)
    mean = float(values.mean())
    if values.size < 2:
        return Estimate(mean)
    half = float(
        stats.t.ppf(0.5 + confidence / 2, values.size - 1) * values.std(ddof=1) / math.sqrt(values.size)
    )
    return Estimate(mean, mean - half, mean + half)


def two_proportion_z_test(x1: int, n1: int, x2: int, n2: int) -> float | None:
    """Two-sided p-value of H0: equal proportions, pooled two-proportion z-test."""
    if n1 <= 0 or n2 <= 0:
        return None
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0
    return float(2 * stats.norm.sf(abs(x1 / n1 - x2 / n2) / se))


def ratio_variance(numerator: np.ndarray, denominator: np.ndarray) -> float:
    """Delta-method variance of sum(numerator) / sum(denominator) over independent users."""
    n = len(numerator)
    mean_den = denominator.mean()
    if n < 2 or mean_den == 0:
        return math.nan
    ratio = numerator.sum() / denominator.sum()
    cov = np.cov(numerator, denominator, ddof=1)
    return float((cov[0, 0] - 2 * ratio * cov[0, 1] + ratio**2 * cov[1, 1]) / (n * mean_den**2))


def user_level_z_test(arm: pd.DataFrame, ref: pd.DataFrame, numerator: str, denominator: str) -> float | None:
    """Two-sided p-value of equal ratio metrics, users as the unit (delta-method variances)."""
    if arm[denominator].sum() == 0 or ref[denominator].sum() == 0:
        return None
    diff = arm[numerator].sum() / arm[denominator].sum() - ref[numerator].sum() / ref[denominator].sum()
    var = sum(
        ratio_variance(t[numerator].to_numpy(float), t[denominator].to_numpy(float)) for t in (arm, ref)
    )
    if not var > 0:  # nan (too few users) or no spread at all
        return None if math.isnan(var) else 1.0
    return float(2 * stats.norm.sf(abs(diff) / math.sqrt(var)))


def welch_p_value(a: np.ndarray, b: np.ndarray) -> float | None:
    if len(a) < 2 or len(b) < 2:
        return None
    p = stats.ttest_ind(a, b, equal_var=False).pvalue
    return None if math.isnan(p) else float(p)


def _metric(sums: np.ndarray, users: np.ndarray | int, metric: str) -> np.ndarray:
    """Metric from per-arm sums (rows: resamples; columns: COUNTS)."""
    col = {c: sums[..., i] for i, c in enumerate(COUNTS)} | {"users": np.asarray(users, np.float64)}
    num, den = RATES.get(metric) or MEANS[metric]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(col[den] > 0, col[num] / np.where(col[den] > 0, col[den], 1), np.nan)


def bootstrap_sums(per_user: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(resamples, COUNTS) column sums of ``per_user`` (users, COUNTS) over users drawn with replacement."""
    n = len(per_user)
    block = max(1, 2_000_000 // max(n * per_user.shape[1], 1))
    parts = []
    for start in range(0, resamples, block):
        draw = rng.integers(0, n, size=(min(block, resamples - start), n))
        parts.append(per_user[draw].sum(axis=1))
    return np.concatenate(parts)


def _interval(samples: np.ndarray, value: float | None, confidence: float) -> Estimate:
    """Percentile interval; resamples without a value (0/0) are left out, and a bound that falls on an
    infinite resample (a relative lift over a reference that was 0 in that resample) is None: unbounded."""
    if value is None or not math.isfinite(value):
        return Estimate(None)
    samples = samples[~np.isnan(samples)]
    if samples.size == 0:
        return Estimate(value)
    alpha = (1 - confidence) / 2
    low, high = (float(q) if math.isfinite(q) else None for q in np.quantile(samples, [alpha, 1 - alpha]))
    return Estimate(float(value), low, high)


# ------------------------------------------------------------------------------------------ tables


def attributed_events(events: pd.DataFrame) -> pd.DataFrame:
    """The events that carry an arm, an event tied to a request once per (request, item, type)."""
    events = events[events["arm"].notna()]
    key = events["request_id"].where(events["request_id"].notna(), "event:" + events["event_id"].astype(str))
    return events[~events.assign(_key=key).duplicated(["event_type", "_key", "item_id"])]


def per_user_table(events: pd.DataFrame) -> pd.DataFrame:
    """One row per (arm, user): the COUNTS columns, from ``attributed_events``."""
    counts = (
        events.pivot_table(
            index=["arm", "user_id"], columns="event_type", values="event_id", aggfunc="count", fill_value=0
        )
        .rename(columns=_COLUMN)
        .reindex(columns=list(_COLUMN.values()), fill_value=0)
    )
    purchases = events[(events["event_type"] == "purchase") & events["order_value"].notna()]
    money = purchases.groupby(["arm", "user_id"])["order_value"].agg(["sum", "count"])
    counts["revenue"] = money["sum"].reindex(counts.index, fill_value=0.0)
    counts["orders"] = money["count"].reindex(counts.index, fill_value=0)
    return counts[list(COUNTS)].astype(np.float64).reset_index()


def summarise_arm(
    arm: str,
    users: pd.DataFrame,
    order_values: np.ndarray,
    versions: list[str],
    confidence: float = CONFIDENCE,
) -> ArmSummary:
    """Counts, rates (Wilson intervals) and means (t-intervals) of one arm from its rows of the per-user table."""
    totals = users[list(COUNTS)].sum()
    count = {c: int(totals[c]) for c in COUNTS if c != "revenue"}
    rates = {
        m: wilson_interval(min(count[num], count[den]), count[den], confidence)
        for m, (num, den) in RATES.items()
    }
    return ArmSummary(
        arm=arm,
        users=len(users),
        impressions=count["impressions"],
        clicks=count["clicks"],
        carts=count["carts"],
        purchases=count["purchases"],
        dismisses=count["dismisses"],
        revenue=round(float(totals["revenue"]), 2),
        order_value=t_interval(order_values, confidence),
        revenue_per_user=t_interval(users["revenue"].to_numpy(), confidence),
        model_versions=versions,
        **rates,
    )


def lifts_against(
    arm: str,
    reference: str,
    users: dict[str, pd.DataFrame],
    order_values: dict[str, np.ndarray],
    resamples: int,
    seed: int,
    confidence: float = CONFIDENCE,
) -> list[Lift]:
    """Lift of ``arm`` over ``reference`` in every metric: bootstrap CI over users, and a test."""
    a, r = users[arm], users[reference]
    a_cols, r_cols = a[list(COUNTS)].to_numpy(), r[list(COUNTS)].to_numpy()
    rng = np.random.default_rng(seed)
    a_boot, r_boot = bootstrap_sums(a_cols, resamples, rng), bootstrap_sums(r_cols, resamples, rng)
    out = []
    for metric in (*RATES, *MEANS):
        a_value = float(_metric(a_cols.sum(axis=0), len(a), metric))
        r_value = float(_metric(r_cols.sum(axis=0), len(r), metric))
        a_samples, r_samples = _metric(a_boot, len(a), metric), _metric(r_boot, len(r), metric)
        diff = a_value - r_value
        with np.errstate(divide="ignore", invalid="ignore"):
            relative = diff / r_value if r_value else math.nan
            rel_samples = (a_samples - r_samples) / r_samples
        if metric in RATES:
            num, den = RATES[metric]
            p = two_proportion_z_test(
                int(a[num].sum()), int(a[den].sum()), int(r[num].sum()), int(r[den].sum())
            )
            p_users, test = user_level_z_test(a, r, num, den), "two-proportion z-test"
        elif metric == "order_value":
            p, p_users = welch_p_value(order_values[arm], order_values[reference]), None
            test = "Welch t-test over purchases"
        else:
            p, p_users = welch_p_value(a["revenue"].to_numpy(), r["revenue"].to_numpy()), None
            test = "Welch t-test over users"
        out.append(
            Lift(
                arm=arm,
                reference=reference,
                metric=metric,
                absolute=_interval(a_samples - r_samples, diff, confidence),
                relative=_interval(rel_samples, relative, confidence),
                p_value=p,
                test=test,
                p_value_users=p_users,
            )
        )
    return out


def summarise_events(
    events: pd.DataFrame,
    reference: str | None = None,
    resamples: int = RESAMPLES,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> tuple[str | None, list[ArmSummary], list[Lift]]:
    """(reference arm, per-arm summaries, lifts of the other arms over the reference) of an events frame
    (the columns of ``EventStore.frame``). The reference defaults to "popularity" if present, else the
    first arm by name."""
    events = attributed_events(events)
    if events.empty:
        return None, [], []
    table = per_user_table(events)
    names = sorted(table["arm"].unique())
    if reference is None:
        reference = DEFAULT_REFERENCE if DEFAULT_REFERENCE in names else (names[0] if names else None)
    elif reference not in names:
        raise StageInputError(
            f"reference arm {reference!r} has no events; arms: {', '.join(names) or '(none)'}"
        )
    users = {arm: table[table["arm"] == arm] for arm in names}
    bought = events[(events["event_type"] == "purchase") & events["order_value"].notna()]
    order_values = {arm: bought.loc[bought["arm"] == arm, "order_value"].to_numpy(float) for arm in names}
    summaries = []
    for arm in names:
        versions = events.loc[events["arm"] == arm, "model_version"].dropna().unique().tolist()
        summaries.append(
            summarise_arm(arm, users[arm], order_values[arm], sorted(map(str, versions)), confidence)
        )
    assert reference is not None  # there are events, so there are arms
    lifts = [
        lift
        for i, arm in enumerate(names)
        if arm != reference
        for lift in lifts_against(arm, reference, users, order_values, resamples, seed + i, confidence)
    ]
    return reference, summaries, lifts


# ------------------------------------------------------------------------------------------ text and plot

RATE_NAMES = {"ctr": "CTR", "cvr": "CVR", "click_to_purchase": "click→purchase"}
MEAN_NAMES = {"order_value": "order value", "revenue_per_user": "revenue/user"}


def _rate(e: Estimate) -> str:
    if e.value is None:
        return "–"
    interval = f" [{100 * e.low:.2f}, {100 * e.high:.2f}]" if e.low is not None and e.high is not None else ""
    return f"{100 * e.value:.2f}%{interval}"


def _money(e: Estimate) -> str:
    if e.value is None:
        return "–"
    interval = f" [{e.low:.2f}, {e.high:.2f}]" if e.low is not None and e.high is not None else ""
    return f"{e.value:.2f}{interval}"


def _signed(e: Estimate, scale: float, unit: str, digits: int = 2) -> str:
    if e.value is None:
        return "–"
    if e.low is None and e.high is None:
        return f"{scale * e.value:+.{digits}f}{unit}"
    low = "-∞" if e.low is None else f"{scale * e.low:+.{digits}f}"
    high = "+∞" if e.high is None else f"{scale * e.high:+.{digits}f}"
    return f"{scale * e.value:+.{digits}f}{unit} [{low}, {high}]"


def _p(p: float | None) -> str:
    return "–" if p is None else ("<0.0001" if p < 1e-4 else f"{p:.4f}")


def markdown_tables(report: ExperimentReport) -> str:
    """The per-arm table and the lift table, as Markdown."""
    level = f"{100 * report.confidence:.0f}% CI"
    lines = [
        f"| arm | users | impressions | clicks | carts | purchases | CTR [{level}] | CVR [{level}] "
        f"| click→purchase | order value | revenue/user |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for a in report.arms:
        name = f"**{a.arm}** (reference)" if a.arm == report.reference else a.arm
        lines.append(
            f"| {name} | {a.users} | {a.impressions} | {a.clicks} | {a.carts} | {a.purchases} | {_rate(a.ctr)} "
            f"| {_rate(a.cvr)} | {_rate(a.click_to_purchase)} | {_money(a.order_value)} "
            f"| {_money(a.revenue_per_user)} |"
        )
    if report.lifts:
        lines += [
            "",
            f"| arm vs {report.reference} | metric | lift [{level}, users bootstrap] | relative | p (test) "
            "| p (users) |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for lift in report.lifts:
            rate = lift.metric in RATES
            absolute = _signed(lift.absolute, 100 if rate else 1, " pp" if rate else "")
            lines.append(
                f"| {lift.arm} | {RATE_NAMES.get(lift.metric) or MEAN_NAMES[lift.metric]} | {absolute} "
                f"| {_signed(lift.relative, 100, '%', 1)} | {_p(lift.p_value)} ({lift.test}) "
                f"| {_p(lift.p_value_users)} |"
            )
    return "\n".join(lines)


def plot_experiment(report: ExperimentReport, path: Path) -> Path:
    """CTR and CVR per arm with their intervals as error bars, and the funnel of each arm (log scale)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    arms = report.arms
    names = [a.arm for a in arms]
    colours = [f"C{i}" for i in range(len(arms))]
    figure = Figure(figsize=(12, 4), layout="constrained")
    FigureCanvasAgg(figure)
    panels = figure.subplots(1, 3)
    for axes, metric in zip(panels[:2], ("ctr", "cvr"), strict=True):
        values = [getattr(a, metric) for a in arms]
        heights = [100 * (e.value or 0.0) for e in values]
        errors = [
            [100 * max(0.0, e.value - e.low) if e.low is not None else 0.0 for e in values],
            [100 * max(0.0, e.high - e.value) if e.high is not None else 0.0 for e in values],
        ]
        axes.bar(names, heights, yerr=errors, capsize=6, color=colours)
        for x, h in enumerate(heights):
            axes.text(x, h, f" {h:.2f}%", ha="left", va="bottom", fontsize=8)
        axes.set_ylabel(f"{RATE_NAMES[metric]} (%), {100 * report.confidence:.0f}% Wilson CI")
        axes.set_title(RATE_NAMES[metric] + (" = purchases / impressions" if metric == "cvr" else ""))
    funnel = panels[2]
    width = 0.8 / max(len(arms), 1)
    stages = ("impressions", "clicks", "carts", "purchases")
    base = 0.5  # log scale: bars stand on 0.5, so an empty stage has none and a count of 1 shows
    for i, a in enumerate(arms):
        where = np.arange(len(stages)) + (i - (len(arms) - 1) / 2) * width
        counts = [getattr(a, s) for s in stages]
        funnel.bar(
            where, [max(c - base, 0) for c in counts], width, bottom=base, label=a.arm, color=colours[i]
        )
        for xi, c in zip(where.tolist(), counts, strict=True):
            funnel.text(xi, max(c, base), str(c), ha="center", va="bottom", fontsize=7)
    funnel.set_xticks(np.arange(len(stages)), stages)
    funnel.set_yscale("log")
    funnel.set_title("funnel")
    funnel.legend(fontsize=8)
    figure.suptitle(f"experiment {report.experiment or '(all arms)'}: {report.events} events")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path


# ------------------------------------------------------------------------------------------ the stage


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "experiment"


def experiment_report(
    cfg: RunConfig,
    since: datetime | None = None,
    experiment: str | None = None,
    out_dir: Path | None = None,
    reference: str | None = None,
    plot_path: Path | None = None,
    resamples: int = RESAMPLES,
) -> ExperimentReport:
    """Report the arms of the feedback events since ``since`` (all, by default) in ``cfg``'s event store.

    ``experiment`` keeps the events of that experiment when the store records experiment names, and names
    the report's files either way. Writes ``<experiment>.json`` and ``<experiment>.png`` to ``out_dir``
    (default ``cfg.paths.reports / "experiment"``; the plot to ``plot_path`` if given).
    """
    from serving.events import open_event_store

    store = open_event_store(cfg)
    try:
        events = store.frame(since)
    finally:
        store.close()
    if experiment is not None and "experiment" in events.columns:
        events = events[events["experiment"] == experiment]
    with_arm = events["arm"].notna()
    if not with_arm.any():
        raise StageInputError(
            "no feedback events with an arm"
            + (f" since {since.isoformat()}" if since else "")
            + ": set an experiment (PUT /admin/experiment) and send events (POST /events, fusionrec simulate)"
        )
    reference, arms, lifts = summarise_events(events, reference, resamples, cfg.seed)
    times = events.loc[with_arm, "timestamp"]
    report = ExperimentReport(
        experiment=experiment,
        reference=reference,
        since=since.isoformat() if since else None,
        first_event=times.min().isoformat(),
        last_event=times.max().isoformat(),
        events=int(with_arm.sum()),
        events_without_arm=int((~with_arm).sum()),
        arms=arms,
        lifts=lifts,
        confidence=CONFIDENCE,
        resamples=resamples,
    )
    report.markdown = markdown_tables(report)
    out_dir = out_dir or cfg.paths.reports / "experiment"
    name = _slug(experiment or "experiment")
    report.plot = str(plot_experiment(report, plot_path or out_dir / f"{name}.png"))
    report.path = str(out_dir / f"{name}.json")
    out_dir.mkdir(parents=True, exist_ok=True)
    Path(report.path).write_text(json.dumps(report.to_dict(), indent=2, sort_keys=True))
    return report
