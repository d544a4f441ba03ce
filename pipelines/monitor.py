"""Monitoring stage: online metrics from the feedback events, service health from the API's /metrics, and the
alert rules of ``infra/monitoring/alerts.yml`` evaluated over both.

In:  the feedback events store (serving/events.py; nothing when there is none yet), the API's /metrics
     (``metrics_url`` or env ``FUSIONREC_METRICS_URL``; optional) and the alert rules (``RULES_FILE``, env
     ``FUSIONREC_ALERT_RULES``).
Out: ``reports/monitor.json`` (this result), ``reports/monitor.png`` (CTR and CVR per window),
     ``reports/monitor.prom`` (the numbers as gauges for node-exporter's textfile collector, which the
     alert rules may read too) and ``home/monitoring/last_scrape.json`` (the counters of the last scrape).

Online metrics, per window of ``window`` ending now and over the ``baseline_windows`` windows before it (the
baseline), overall and per experiment arm: CTR = clicks / impressions, CVR = purchases / impressions,
revenue = purchase order values. ``ctr_drop`` = 1 - CTR / baseline CTR (positive when CTR fell), likewise
``cvr_drop``; both need ``min_events`` impressions on each side. Drift: the PSI (pipelines/drift.py) of the
event-type mix and of the item popularity of the window's events against the baseline's.

Service: the API's counters are read as the change since the previous scrape (the whole process life on the
first scrape or after a restart, when a counter went down): fallback rate = fallbacks / recommendation
requests, 5xx rate, latency p99 of recommendation requests from the histogram buckets (Prometheus'
``histogram_quantile`` interpolation).

Prometheus cannot be asked for these here, so each rule of the rules file carries the annotation
``fusionrec_check: "<quantity> <op> <threshold>"``, which this module evaluates (``QUANTITIES``; the file's
header has the contract). A quantity without data is "skipped", never firing. ``fail_on_alert`` raises
``AlertsFiring`` once everything is written, so an Airflow task fails visibly.
"""

from __future__ import annotations

import json
import logging
import operator
import os
import re
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fusionrec.config import RunConfig
from pipelines.stage import StageInputError, StageResult

log = logging.getLogger(__name__)

RULES_FILE = Path(__file__).resolve().parents[1] / "infra" / "monitoring" / "alerts.yml"
RULES_ENV = "FUSIONREC_ALERT_RULES"
METRICS_URL_ENV = "FUSIONREC_METRICS_URL"
CHECK_KEY = "fusionrec_check"  # the annotation our evaluator reads
BASELINE_WINDOWS = 24
MIN_EVENTS = 100
RECOMMEND_ENDPOINT = "recommendations"  # ``endpoint`` label of recommendation requests (serving/metrics.py)
SCRAPE_TIMEOUT = 5.0
QUANTILE = 0.99

# What a rule's check may read (the rules file header documents the same list).
QUANTITIES = {
    "ctr_drop": "1 - CTR(window) / CTR(baseline), CTR = clicks / impressions (feedback events)",
    "cvr_drop": "1 - CVR(window) / CVR(baseline), CVR = purchases / impressions (feedback events)",
    "feedback_drift_psi": "largest PSI of the event-type mix and item popularity, window vs baseline",
    "fallback_rate": "fallbacks / recommendation requests (API /metrics)",
    "error_rate": "5xx share of all API requests (API /metrics)",
    "latency_p99_seconds": "p99 latency of recommendation requests in seconds (API /metrics histogram)",
    "api_down": "1 when the API's /metrics could not be scraped, else 0",
}
OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}
_CHECK = re.compile(r"^\s*([a-z0-9_]+)\s*(>=|<=|>|<)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")
_API_METRICS = ("fusionrec_requests_total", "fusionrec_fallbacks_total", "fusionrec_request_latency_seconds")


class AlertsFiring(Exception):
    """Alerts fired and the caller asked to fail (``fail_on_alert``); ``result`` has the whole report."""

    def __init__(self, message: str, result: MonitorResult) -> None:
        super().__init__(message)
        self.result = result


# ---------------------------------------------------------------- the rules


@dataclass(frozen=True)
class AlertRule:
    alert: str
    group: str
    quantity: str  # one of QUANTITIES
    op: str  # one of OPERATORS
    threshold: float
    severity: str
    summary: str

    @property
    def check(self) -> str:
        return f"{self.quantity} {self.op} {self.threshold:g}"


def parse_check(text: str) -> tuple[str, str, float]:
    """``"ctr_drop > 0.2"`` -> ("ctr_drop", ">", 0.2); ValueError for anything else."""
    match = _CHECK.match(str(text))
    if not match:
        raise ValueError(f"{text!r} is not '<quantity> <op> <number>' with op one of {' '.join(OPERATORS)}")
    quantity, op, threshold = match.groups()
    if quantity not in QUANTITIES:
        raise ValueError(f"unknown quantity {quantity!r} (known: {', '.join(QUANTITIES)})")
    return quantity, op, float(threshold)


def load_rules(path: Path | None = None) -> list[AlertRule]:
    """The alerting rules of a Prometheus rule file, each with the check our evaluator runs.

    Raises ``StageInputError`` (one line naming the file and rule) for a file that is not a rule file or an
    alerting rule without a valid ``fusionrec_check`` annotation. Recording rules are ignored.
    """
    import yaml

    path = Path(path or os.environ.get(RULES_ENV) or RULES_FILE)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise StageInputError(f"alert rules {path}: cannot read: {str(exc).splitlines()[0]}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("groups"), list):
        raise StageInputError(f"alert rules {path}: not a Prometheus rule file (no 'groups' list)")
    rules = []
    for group in data["groups"]:
        for rule in group.get("rules") or []:
            if "alert" not in rule:
                continue
            annotations = rule.get("annotations") or {}
            labels = rule.get("labels") or {}
            check = annotations.get(CHECK_KEY, labels.get(CHECK_KEY))
            if check is None:
                raise StageInputError(f"alert rules {path}: alert {rule['alert']}: no {CHECK_KEY} annotation")
            try:
                quantity, op, threshold = parse_check(check)
            except ValueError as exc:
                raise StageInputError(f"alert rules {path}: alert {rule['alert']}: {exc}") from exc
            rules.append(
                AlertRule(
                    alert=rule["alert"],
                    group=group.get("name", ""),
                    quantity=quantity,
                    op=op,
                    threshold=threshold,
                    severity=labels.get("severity", "warning"),
                    summary=annotations.get("summary", rule["alert"]),
                )
            )
    return rules


# ---------------------------------------------------------------- online metrics (feedback events)


@dataclass
class WindowStats:
    start: str
    end: str
    events: int = 0
    impressions: int = 0
    clicks: int = 0
    carts: int = 0
    purchases: int = 0
    dismissals: int = 0
    revenue: float = 0.0  # sum of purchase order values
    ctr: float | None = None  # clicks / impressions
    cvr: float | None = None  # purchases / impressions


@dataclass
class ArmStats:
    arm: str
    window: WindowStats
    baseline: WindowStats


@dataclass
class OnlineMetrics:
    store: str | None  # the events store read; None when there is none yet
    window: WindowStats
    baseline: WindowStats
    arms: list[ArmStats] = field(default_factory=list)
    series: list[WindowStats] = field(default_factory=list)  # each window, oldest first (the plot)
    ctr_drop: float | None = None
    cvr_drop: float | None = None


def window_stats(events: pd.DataFrame, start: datetime, end: datetime) -> WindowStats:
    """Counts and rates of ``events`` (EventStore.frame columns), labelled with [start, end)."""
    counts = events["event_type"].value_counts()
    impressions = int(counts.get("impression", 0))
    clicks, purchases = int(counts.get("click", 0)), int(counts.get("purchase", 0))
    revenue = events.loc[events["event_type"] == "purchase", "order_value"].sum(min_count=1)
    return WindowStats(
        start=start.isoformat(),
        end=end.isoformat(),
        events=len(events),
        impressions=impressions,
        clicks=clicks,
        carts=int(counts.get("cart", 0)),
        purchases=purchases,
        dismissals=int(counts.get("dismiss", 0)),
        revenue=round(float(revenue), 2) if pd.notna(revenue) else 0.0,
        ctr=clicks / impressions if impressions else None,
        cvr=purchases / impressions if impressions else None,
    )


def window_index(timestamps: pd.Series, end: datetime, window: timedelta) -> np.ndarray:
    """0 for events in the last window [end - window, end), 1 for the one before, ...; -1 after ``end``."""
    age = (pd.Timestamp(end) - timestamps) / pd.Timedelta(window)
    index = np.floor(age.to_numpy(dtype="float64")).astype("int64")
    return np.where(age.to_numpy(dtype="float64") > 0, np.maximum(index, 0), -1)


def online_metrics(
    events: pd.DataFrame,
    end: datetime,
    window: timedelta,
    baseline_windows: int,
    min_events: int,
    store: str | None,
) -> OnlineMetrics:
    """Online metrics of the last window against the ``baseline_windows`` before it (see module docstring)."""
    index = window_index(events["timestamp"], end, window)
    start = end - window
    first = end - window * (baseline_windows + 1)
    current, baseline = events[index == 0], events[(index >= 1) & (index <= baseline_windows)]
    series = [
        window_stats(events[index == k], end - window * (k + 1), end - window * k)
        for k in range(baseline_windows, -1, -1)
    ]
    arms = sorted(set(current["arm"].dropna()) | set(baseline["arm"].dropna()))
    result = OnlineMetrics(
        store=store,
        window=window_stats(current, start, end),
        baseline=window_stats(baseline, first, start),
        arms=[
            ArmStats(
                arm,
                window_stats(current[current["arm"] == arm], start, end),
                window_stats(baseline[baseline["arm"] == arm], first, start),
            )
            for arm in arms
        ],
        series=series,
    )
    result.ctr_drop = _drop(result.window, result.baseline, "ctr", min_events)
    result.cvr_drop = _drop(result.window, result.baseline, "cvr", min_events)
    return result


def _drop(now: WindowStats, base: WindowStats, rate: str, min_events: int) -> float | None:
    """1 - now / base of a rate; None without ``min_events`` impressions on both sides or a zero baseline."""
    value, reference = getattr(now, rate), getattr(base, rate)
    if min(now.impressions, base.impressions) < min_events or value is None or not reference:
        return None
    return 1.0 - value / reference


@dataclass
class FeedbackDrift:
    """PSI of the window's feedback events against the baseline's (None: too few events on a side)."""

    event_type_mix: float | None = None
    item_popularity: float | None = None
    moved: dict[str, str] = field(default_factory=dict)  # check -> bins that moved most

    @property
    def largest(self) -> float | None:
        values = [v for v in (self.event_type_mix, self.item_popularity) if v is not None]
        return max(values) if values else None


def feedback_drift(current: pd.DataFrame, baseline: pd.DataFrame, min_events: int) -> FeedbackDrift:
    from pipelines import drift

    if min(len(current), len(baseline)) < min_events:
        return FeedbackDrift()
    profiles = []
    for frame in (current, baseline):
        profile = drift.BatchProfile()
        profile.update(frame[["event_type", "item_id", "user_id"]])
        profiles.append(profile)
    hists = drift.histograms(profiles[0], profiles[1])
    result = FeedbackDrift()
    for name in ("event_type_mix", "item_popularity"):
        hist = hists[name]
        setattr(result, name, round(drift.psi(hist.new, hist.reference), 4))
        result.moved[name] = _moves(hist)
    return result


def _moves(hist: Any, show: int = 3) -> str:
    new, ref = hist.new / max(hist.new.sum(), 1), hist.reference / max(hist.reference.sum(), 1)
    order = np.argsort(-np.abs(new - ref), kind="stable")[:show]
    return ", ".join(f"{hist.labels[i]}: {ref[i]:.1%} -> {new[i]:.1%}" for i in order)


# ---------------------------------------------------------------- service metrics (the API's /metrics)

SampleKey = tuple[str, tuple[tuple[str, str], ...]]  # (sample name, sorted labels)


def parse_metrics(text: str) -> dict[SampleKey, float]:
    """The API's counter and histogram samples of a Prometheus text exposition (other metrics left out)."""
    from prometheus_client.parser import text_string_to_metric_families

    samples: dict[SampleKey, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith(_API_METRICS) and not sample.name.endswith("_created"):
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return samples


def scrape(url: str, timeout: float = SCRAPE_TIMEOUT) -> str:
    """The text of ``url`` (the API's /metrics)."""
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - operator-given URL
        return response.read().decode("utf-8")


@dataclass
class ServiceMetrics:
    url: str | None  # None: no metrics URL given
    error: str | None = None  # why the scrape failed
    since: str | None = None  # counters are changes since this earlier scrape; None: since process start
    requests: float = 0.0
    recommendation_requests: float = 0.0
    errors_5xx: float = 0.0
    fallbacks: float = 0.0
    fallback_reasons: dict[str, float] = field(default_factory=dict)
    fallback_rate: float | None = None
    error_rate: float | None = None
    latency_p99_seconds: float | None = None
    latency_observations: float = 0.0


def service_metrics(samples: dict[SampleKey, float], url: str | None, since: str | None) -> ServiceMetrics:
    """Rates and the latency p99 from (changes of) the API's counters."""
    result = ServiceMetrics(url=url, since=since)
    buckets: dict[float, float] = {}
    for (name, label_pairs), value in samples.items():
        labels = dict(label_pairs)
        recommend = labels.get("endpoint", "").lstrip("/").startswith(RECOMMEND_ENDPOINT)
        if name == "fusionrec_requests_total":
            result.requests += value
            result.recommendation_requests += value if recommend else 0.0
            result.errors_5xx += value if labels.get("status", "").startswith("5") else 0.0
        elif name == "fusionrec_fallbacks_total":
            result.fallbacks += value
            reason = labels.get("reason", "")
            result.fallback_reasons[reason] = result.fallback_reasons.get(reason, 0.0) + value
        elif name == "fusionrec_request_latency_seconds_bucket" and recommend:
            le = float(labels["le"])
            buckets[le] = buckets.get(le, 0.0) + value
    if result.recommendation_requests:
        result.fallback_rate = result.fallbacks / result.recommendation_requests
    if result.requests:
        result.error_rate = result.errors_5xx / result.requests
    ordered = sorted(buckets.items())
    result.latency_observations = ordered[-1][1] if ordered else 0.0
    result.latency_p99_seconds = histogram_quantile(QUANTILE, ordered)
    return result


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Prometheus' ``histogram_quantile`` over cumulative (upper bound, count) buckets sorted by bound, the
    last +Inf: linear interpolation inside the bucket holding the rank; in the +Inf bucket, the largest
    finite bound. None without observations."""
    if not buckets or buckets[-1][0] != float("inf") or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    position = next(i for i, (_, count) in enumerate(buckets) if count >= rank)
    upper, count = buckets[position]
    if upper == float("inf"):
        return buckets[-2][0] if len(buckets) > 1 else None
    lower, below = buckets[position - 1] if position else (0.0, 0.0)
    if position == 0 and upper <= 0:
        return upper
    return lower + (upper - lower) * (rank - below) / (count - below) if count > below else upper


def read_service(cfg: RunConfig, url: str | None) -> ServiceMetrics:
    """Scrape ``url``, turn its counters into changes since the previous scrape, remember this one."""
    if not url:
        return ServiceMetrics(url=None)
    try:
        samples = parse_metrics(scrape(url))
    except (OSError, ValueError) as exc:  # URLError is an OSError; a bad exposition a ValueError
        log.warning("monitor: cannot scrape %s: %s", url, exc)
        return ServiceMetrics(url=url, error=str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    state = cfg.paths.home / "monitoring" / "last_scrape.json"
    changes, since = counter_changes(samples, _load_scrape(state, url))
    _save_scrape(state, url, samples)
    return service_metrics(changes, url, since)


def counter_changes(
    samples: dict[SampleKey, float], previous: tuple[str, dict[SampleKey, float]] | None
) -> tuple[dict[SampleKey, float], str | None]:
    """(changes since ``previous`` = (time, samples), its time), or the samples themselves and None when
    there is no previous scrape or the API restarted since (a counter went down or disappeared)."""
    if previous is None:
        return samples, None
    at, before = previous
    changes = {key: value - before.get(key, 0.0) for key, value in samples.items()}
    if any(v < 0 for v in changes.values()) or not set(before) <= set(samples):
        return samples, None
    return changes, at


def _load_scrape(path: Path, url: str) -> tuple[str, dict[SampleKey, float]] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if data.get("url") != url:
        return None
    samples = {(name, tuple(sorted(labels.items()))): float(v) for name, labels, v in data["samples"]}
    return data["at"], samples


def _save_scrape(path: Path, url: str, samples: dict[SampleKey, float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [[name, dict(labels), value] for (name, labels), value in samples.items()]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"url": url, "at": datetime.now(UTC).isoformat(), "samples": rows}))
    os.replace(tmp, path)


# ---------------------------------------------------------------- evaluating the rules


@dataclass
class RuleOutcome:
    alert: str
    severity: str
    check: str  # "ctr_drop > 0.2"
    value: float | None
    status: str  # "firing" | "ok" | "skipped"
    message: str


def evaluate_rules(
    rules: list[AlertRule], values: dict[str, float | None], notes: dict[str, str]
) -> list[RuleOutcome]:
    """Each rule's check on ``values``; a missing value skips the rule with the note saying why."""
    outcomes = []
    for rule in rules:
        value = values.get(rule.quantity)
        if value is None:
            note = notes.get(rule.quantity, "no data")
            outcomes.append(RuleOutcome(rule.alert, rule.severity, rule.check, None, "skipped", note))
            continue
        firing = OPERATORS[rule.op](value, rule.threshold)
        message = f"{rule.summary} ({rule.quantity} = {value:.4g}, threshold {rule.op} {rule.threshold:g})"
        outcomes.append(
            RuleOutcome(rule.alert, rule.severity, rule.check, value, "firing" if firing else "ok", message)
        )
    return outcomes


def check_values(
    online: OnlineMetrics, drift: FeedbackDrift, service: ServiceMetrics, min_events: int
) -> tuple[dict[str, float | None], dict[str, str]]:
    """The value of every quantity in ``QUANTITIES`` and, for those without one, why."""
    values: dict[str, float | None] = {
        "ctr_drop": online.ctr_drop,
        "cvr_drop": online.cvr_drop,
        "feedback_drift_psi": drift.largest,
        "fallback_rate": service.fallback_rate,
        "error_rate": service.error_rate,
        "latency_p99_seconds": service.latency_p99_seconds,
        "api_down": None if service.url is None else float(service.error is not None),
    }
    volume = (
        f"{online.window.impressions} impressions in the window and {online.baseline.impressions} in the "
        f"baseline (min_events {min_events})"
        if online.store
        else "no feedback events store"
    )
    events = f"{online.window.events} events in the window, {online.baseline.events} in the baseline"
    scrape = (
        "no metrics URL (--metrics-url or FUSIONREC_METRICS_URL)"
        if service.url is None
        else f"scrape of {service.url} failed: {service.error}"
        if service.error
        else "no requests since the last scrape"
    )
    notes = {
        "ctr_drop": volume,
        "cvr_drop": volume,
        "feedback_drift_psi": f"{events} (min_events {min_events})",
        "fallback_rate": scrape,
        "error_rate": scrape,
        "latency_p99_seconds": scrape,
        "api_down": scrape,
    }
    return values, {k: v for k, v in notes.items() if values[k] is None}


# ---------------------------------------------------------------- the stage


@dataclass
class MonitorResult(StageResult):
    status: str  # "ok" | "alerting"
    window_start: str
    window_end: str
    window_minutes: float
    baseline_windows: int
    min_events: int
    online: OnlineMetrics
    drift: FeedbackDrift
    service: ServiceMetrics
    values: dict[str, float | None]  # the quantities the rules read
    rules: list[RuleOutcome]
    firing: list[str]  # alert names
    rules_file: str
    report: str = ""
    plot: str | None = None
    textfile: str = ""


def monitor(
    cfg: RunConfig,
    metrics_url: str | None = None,
    window: timedelta = timedelta(hours=1),
    *,
    baseline_windows: int = BASELINE_WINDOWS,
    min_events: int = MIN_EVENTS,
    fail_on_alert: bool = False,
    rules_file: Path | None = None,
    now: datetime | None = None,
) -> MonitorResult:
    """Compute online and service metrics, evaluate the alert rules, write the report, plot and textfile.

    ``metrics_url``: the API's /metrics (default env ``FUSIONREC_METRICS_URL``; none: service rules skipped).
    Returns the result (``firing`` names the alerts that fired, each also logged as a warning); with
    ``fail_on_alert`` raises ``AlertsFiring`` after writing everything when any fired.
    """
    if window <= timedelta(0) or baseline_windows < 1 or min_events < 0:
        raise StageInputError(
            "monitor: window must be positive, baseline_windows at least 1, min_events >= 0"
        )
    rules_path = Path(rules_file or os.environ.get(RULES_ENV) or RULES_FILE)
    rules = load_rules(rules_path)  # a broken rules file fails before any work
    end = (now or datetime.now(UTC)).astimezone(UTC)
    store, events = _read_events(cfg, end - window * (baseline_windows + 1))
    online = online_metrics(events, end, window, baseline_windows, min_events, store)
    index = window_index(events["timestamp"], end, window)
    drift = feedback_drift(events[index == 0], events[(index >= 1) & (index <= baseline_windows)], min_events)
    service = read_service(cfg, metrics_url or os.environ.get(METRICS_URL_ENV))
    values, notes = check_values(online, drift, service, min_events)
    outcomes = evaluate_rules(rules, values, notes)
    firing = [o for o in outcomes if o.status == "firing"]
    reports = cfg.paths.reports
    result = MonitorResult(
        status="alerting" if firing else "ok",
        window_start=(end - window).isoformat(),
        window_end=end.isoformat(),
        window_minutes=window.total_seconds() / 60,
        baseline_windows=baseline_windows,
        min_events=min_events,
        online=online,
        drift=drift,
        service=service,
        values={k: None if v is None else round(v, 6) for k, v in values.items()},
        rules=outcomes,
        firing=[o.alert for o in firing],
        rules_file=str(rules_path),
        report=str(reports / "monitor.json"),
        plot=str(plot_online(online, firing, reports / "monitor.png")),
        textfile=str(write_textfile(online, drift, values, outcomes, reports / "monitor.prom")),
    )
    result.save(reports, "monitor")
    for outcome in firing:
        log.warning("ALERT %s [%s]: %s", outcome.alert, outcome.severity, outcome.message)
    log.info(
        "monitor: %d of %d rules firing; CTR %s (baseline %s); report %s",
        len(firing), len(outcomes), _pct(online.window.ctr), _pct(online.baseline.ctr), result.report,
    )  # fmt: skip
    if firing and fail_on_alert:
        names = ", ".join(f"{o.alert} ({o.check}: {o.value:.4g})" for o in firing)
        raise AlertsFiring(f"{len(firing)} alert(s) firing: {names}; report {result.report}", result)
    return result


def _read_events(cfg: RunConfig, since: datetime) -> tuple[str | None, pd.DataFrame]:
    """(store label, events since ``since``); no store yet: (None, an empty frame). Never creates one."""
    from pipelines.ingest import feedback_label
    from serving.events import COLUMNS, open_event_store

    if not cfg.events_url and not cfg.paths.events_db.exists():
        empty = pd.DataFrame({c: pd.Series(dtype=object) for c in COLUMNS})
        empty["timestamp"] = pd.Series(dtype="datetime64[ns, UTC]")
        empty["order_value"] = pd.Series(dtype="float64")
        return None, empty
    store = open_event_store(cfg)
    try:
        return feedback_label(cfg).removeprefix("feedback:"), store.frame(since=since)
    finally:
        store.close()


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


# ---------------------------------------------------------------- outputs


def plot_online(online: OnlineMetrics, firing: list[RuleOutcome], path: Path) -> Path:
    """PNG of CTR and CVR per window (the last one on the right) with the baseline rates dashed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    ends = [pd.Timestamp(w.end) for w in online.series]
    for rate, colour in (("ctr", "#1f4e79"), ("cvr", "#c55a11")):
        values = [np.nan if getattr(w, rate) is None else getattr(w, rate) for w in online.series]
        axes.plot(ends, values, marker="o", color=colour, label=rate.upper())
        reference = getattr(online.baseline, rate)
        if reference is not None:
            axes.axhline(
                reference, color=colour, linestyle="--", linewidth=1, label=f"{rate.upper()} baseline"
            )
    axes.yaxis.set_major_formatter(lambda value, _: f"{value:.1%}")
    axes.set_xlabel("window end (UTC)")
    axes.set_ylabel("rate per impression")
    axes.legend(fontsize=8)
    title = f"Online metrics ({online.store or 'no events store'})"
    if firing:
        title += "\nFIRING: " + ", ".join(o.alert for o in firing)
    axes.set_title(title, color="#c00000" if firing else "black", fontsize=10)
    figure.autofmt_xdate()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    return path


def write_textfile(
    online: OnlineMetrics,
    drift: FeedbackDrift,
    values: dict[str, float | None],
    outcomes: list[RuleOutcome],
    path: Path,
) -> Path:
    """The numbers as Prometheus gauges in node-exporter's textfile format (``fusionrec_monitor_*``)."""
    from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

    registry = CollectorRegistry()
    rates = {
        name: Gauge(f"fusionrec_monitor_{name}", text, ["window", "arm"], registry=registry)
        for name, text in (
            ("ctr", "Clicks per impression from the feedback events"),
            ("cvr", "Purchases per impression from the feedback events"),
            ("impressions", "Impressions in the feedback events"),
        )
    }
    sides = [("all", online.window, online.baseline)] + [(a.arm, a.window, a.baseline) for a in online.arms]
    for arm, current, baseline in sides:
        for label, stats in (("current", current), ("baseline", baseline)):
            rates["impressions"].labels(label, arm).set(stats.impressions)
            for name in ("ctr", "cvr"):
                if (value := getattr(stats, name)) is not None:
                    rates[name].labels(label, arm).set(value)
    psi = Gauge(
        "fusionrec_monitor_feedback_drift_psi", "PSI of the feedback events", ["check"], registry=registry
    )
    for check in ("event_type_mix", "item_popularity"):
        if (value := getattr(drift, check)) is not None:
            psi.labels(check).set(value)
    checks = Gauge(
        "fusionrec_monitor_check_value", "Quantities the alert rules read", ["quantity"], registry=registry
    )
    for quantity, value in values.items():
        if value is not None:
            checks.labels(quantity).set(value)
    alerts = Gauge(
        "fusionrec_monitor_alert_firing",
        "1 when the rule fired",
        ["alertname", "severity"],
        registry=registry,
    )
    for outcome in outcomes:
        alerts.labels(outcome.alert, outcome.severity).set(float(outcome.status == "firing"))
    Gauge(
        "fusionrec_monitor_last_run_timestamp_seconds", "When the monitor last ran", registry=registry
    ).set_to_current_time()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry)
    return path
