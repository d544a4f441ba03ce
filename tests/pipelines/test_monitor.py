"""Monitoring: online metrics from feedback events, the API's /metrics over real HTTP, and the alert rules of
infra/monitoring/alerts.yml evaluated through their ``fusionrec_check`` annotations."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from fusionrec.commands.monitor import monitor as monitor_command
from fusionrec.config import RunConfig
from pipelines.monitor import (
    QUANTITIES,
    RULES_FILE,
    AlertsFiring,
    histogram_quantile,
    load_rules,
    monitor,
    parse_check,
)
from pipelines.stage import StageInputError
from serving.events import FeedbackEvent, open_event_store

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
SMALL = {"baseline_windows": 4, "min_events": 100, "now": NOW}  # 4 baseline hours keep the stores small


def _traffic(
    window: int,
    impressions: int,
    clicks: int,
    purchases: int,
    arm: str = "champion",
    items: int = 20,
    end: datetime = NOW,
) -> list[FeedbackEvent]:
    """Events over the middle 80% of window ``window`` (0: the hour before ``end``), items cycling over
    i0..i<items>."""
    start = end - HOUR * (window + 1) + HOUR / 10
    step = HOUR * 0.8 / impressions
    events = []
    for n in range(impressions):
        at = start + step * n
        user, item = f"user{n % 37}", f"i{n % items}"
        events.append(FeedbackEvent("impression", user, item, at, arm=arm, position=n % 10))
        if n < clicks:
            events.append(FeedbackEvent("click", user, item, at + timedelta(seconds=1), arm=arm))
        if n < purchases:
            events.append(
                FeedbackEvent("purchase", user, item, at + timedelta(seconds=2), arm=arm, order_value=20.0)
            )
    return events


def _store(home: Path, events: list[FeedbackEvent]) -> RunConfig:
    cfg = RunConfig.from_env(home=home)
    store = open_event_store(cfg)
    try:
        store.add(events)
    finally:
        store.close()
    return cfg


def _baseline(arm: str = "champion", end: datetime = NOW) -> list[FeedbackEvent]:
    return [e for w in range(1, 5) for e in _traffic(w, 200, 20, 4, arm=arm, end=end)]  # CTR 10%, CVR 2%


def _statuses(result) -> dict[str, str]:
    return {r.alert: r.status for r in result.rules}


def test_a_ctr_drop_fires_the_ctr_rule_and_writes_the_report(home: Path) -> None:
    cfg = _store(home, _baseline() + _traffic(0, 200, 8, 4))  # CTR 10% -> 4%; CVR unchanged
    result = monitor(cfg, **SMALL)

    assert result.status == "alerting" and result.firing == ["FusionRecCTRDrop"]
    assert result.online.window.ctr == pytest.approx(0.04) and result.online.baseline.ctr == pytest.approx(
        0.1
    )
    assert result.values["ctr_drop"] == pytest.approx(0.6)
    assert result.values["cvr_drop"] == pytest.approx(0.0)
    assert (result.online.window.impressions, result.online.baseline.impressions) == (200, 800)
    assert result.online.window.revenue == 80.0
    assert [a.arm for a in result.online.arms] == ["champion"]
    assert len(result.online.series) == 5 and result.online.series[-1].ctr == pytest.approx(0.04)
    statuses = _statuses(result)
    assert statuses["FusionRecConversionDrop"] == "ok"
    assert statuses["FusionRecHighFallbackRate"] == "skipped"  # no metrics URL

    report = json.loads((cfg.paths.reports / "monitor.json").read_text())
    assert report["firing"] == ["FusionRecCTRDrop"] and report["status"] == "alerting"
    assert Path(result.plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    prom = (cfg.paths.reports / "monitor.prom").read_text()
    assert 'fusionrec_monitor_alert_firing{alertname="FusionRecCTRDrop",severity="warning"} 1.0' in prom
    assert 'fusionrec_monitor_ctr{arm="all",window="current"} 0.04' in prom


def test_healthy_traffic_fires_nothing(home: Path) -> None:
    cfg = _store(home, _baseline() + _traffic(0, 200, 21, 4))
    result = monitor(cfg, **SMALL)
    assert result.status == "ok" and result.firing == []
    assert result.values["ctr_drop"] == pytest.approx(-0.05)
    assert result.drift.item_popularity is not None and result.drift.item_popularity < 0.05
    skipped = {r.alert: r.message for r in result.rules if r.status == "skipped"}
    assert "no metrics URL" in skipped["FusionRecHighLatencyP99"]


def test_too_few_impressions_skip_the_ctr_rule(home: Path) -> None:
    cfg = _store(home, _baseline() + _traffic(0, 50, 0, 0))  # CTR 0%, but only 50 impressions
    result = monitor(cfg, **SMALL)
    assert result.values["ctr_drop"] is None and result.firing == []
    ctr = next(r for r in result.rules if r.alert == "FusionRecCTRDrop")
    assert ctr.status == "skipped" and "50 impressions in the window" in ctr.message


def test_per_arm_rates_and_a_shift_of_items_fires_the_drift_rule(home: Path) -> None:
    events = _baseline("champion") + _baseline("popularity")
    events += _traffic(0, 200, 20, 4, arm="champion", items=2)  # all traffic on two items now
    events += _traffic(0, 200, 30, 4, arm="popularity", items=2)
    result = monitor(_store(home, events), **SMALL)
    arms = {a.arm: a for a in result.online.arms}
    assert arms["popularity"].window.ctr == pytest.approx(0.15) and arms[
        "champion"
    ].window.ctr == pytest.approx(0.1)
    assert result.drift.item_popularity > 0.25 and "i0" in result.drift.moved["item_popularity"]
    assert "FusionRecFeedbackDrift" in result.firing and "FusionRecCTRDrop" not in result.firing


def test_no_events_store_skips_online_rules_and_creates_none(home: Path) -> None:
    cfg = RunConfig.from_env(home=home)
    result = monitor(cfg, **SMALL)
    assert result.online.store is None and result.firing == []
    assert not cfg.paths.events_db.exists()
    assert "no feedback events store" in next(
        r.message for r in result.rules if r.alert == "FusionRecCTRDrop"
    )


def test_fail_on_alert_raises_after_writing_the_report(home: Path) -> None:
    cfg = _store(home, _baseline() + _traffic(0, 200, 2, 0))
    with pytest.raises(AlertsFiring, match="FusionRecCTRDrop") as raised:
        monitor(cfg, fail_on_alert=True, **SMALL)
    assert "FusionRecConversionDrop" in raised.value.result.firing
    assert json.loads((cfg.paths.reports / "monitor.json").read_text())["status"] == "alerting"


# ---------------------------------------------------------------- the API's /metrics over HTTP


def api_metrics(requests: int, fallbacks: int, errors: int = 0, slow: int = 0) -> str:
    """The /metrics text of the API's own metrics (serving/metrics.py) after this traffic."""
    from prometheus_client import generate_latest

    from serving.metrics import ServingMetrics

    metrics = ServingMetrics()
    metrics.requests.labels("recommendations", "champion", "200").inc(requests)
    metrics.requests.labels("events", "", "500").inc(errors)
    metrics.feedback.labels("click", "champion").inc(3)
    for n in range(requests):
        metrics.recommend_latency.observe(0.0075 if n < slow else 0.0008)
    metrics.fallbacks.labels("store_unavailable").inc(fallbacks)
    return generate_latest(metrics.registry).decode()


@contextlib.contextmanager
def serve_metrics() -> Iterator[tuple[str, dict[str, str]]]:
    """A real HTTP server on 127.0.0.1 serving ``page["text"]`` at /metrics: yields (URL, page)."""
    page = {"text": ""}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            body = page["text"].encode()
            self.send_response(200 if self.path == "/metrics" else 404)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/metrics", page
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def metrics_server() -> Iterator[tuple[str, dict[str, str]]]:
    with serve_metrics() as served:
        yield served


def test_fallbacks_in_the_api_metrics_fire_the_fallback_rule(home: Path, metrics_server) -> None:
    url, page = metrics_server
    cfg = RunConfig.from_env(home=home)
    page["text"] = api_metrics(requests=200, fallbacks=30, slow=1)
    first = monitor(cfg, metrics_url=url, **SMALL)
    assert first.service.since is None  # first scrape: counters since the API started
    assert first.service.fallback_rate == pytest.approx(0.15)
    assert first.service.fallback_reasons == {"store_unavailable": 30.0}
    assert first.service.latency_p99_seconds < 0.005 and first.values["api_down"] == 0.0
    assert "FusionRecHighFallbackRate" in first.firing
    assert _statuses(first)["FusionRecHighLatencyP99"] == "ok"

    # The next scrape reads the change: 200 more requests, no new fallback, a fifth of them slow.
    page["text"] = api_metrics(requests=400, fallbacks=30, errors=10, slow=41)
    second = monitor(cfg, metrics_url=url, **SMALL)
    assert second.service.since is not None and second.service.recommendation_requests == 200
    assert second.service.fallback_rate == 0.0 and second.service.error_rate == pytest.approx(10 / 210)
    assert second.service.latency_p99_seconds == pytest.approx(0.0075, abs=0.0025)
    assert set(second.firing) == {"FusionRecHighLatencyP99", "FusionRecHigh5xxRate"}


def test_metrics_url_from_env_and_an_unreachable_api(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("FUSIONREC_METRICS_URL", f"http://127.0.0.1:{port}/metrics")
    result = monitor(RunConfig.from_env(home=home), **SMALL)
    assert result.service.error and result.values["api_down"] == 1.0
    assert result.firing == ["FusionRecAPIDown"]
    assert "scrape of" in next(r.message for r in result.rules if r.alert == "FusionRecHighFallbackRate")


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    inf = float("inf")
    # promtool computes 9.5 ms for these buckets (infra/monitoring/alerts_test.yml, third case)
    assert histogram_quantile(0.99, [(0.0025, 540), (0.005, 540), (0.01, 600), (inf, 600)]) == pytest.approx(
        0.0095
    )
    assert histogram_quantile(0.5, [(0.001, 300), (0.0025, 597), (inf, 600)]) == pytest.approx(0.001)
    assert histogram_quantile(0.99, [(0.001, 10), (inf, 100)]) == 0.001  # in +Inf: largest finite bound
    assert histogram_quantile(0.99, [(0.001, 0), (inf, 0)]) is None


# ---------------------------------------------------------------- the rules file


def test_rules_file_is_a_prometheus_rule_file_with_checks_we_evaluate() -> None:
    data = yaml.safe_load(RULES_FILE.read_text())
    assert set(data) == {"groups"} and data["groups"]
    checked = set()
    for group in data["groups"]:
        assert set(group) == {"name", "rules"}
        for rule in group["rules"]:
            assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule.get("alert")
            assert rule["labels"]["severity"] in {"critical", "warning", "info"}
            assert rule["annotations"]["summary"] and rule["expr"].strip()
            quantity, _, _ = parse_check(rule["annotations"]["fusionrec_check"])
            checked.add(quantity)
    assert checked == set(QUANTITIES)  # every rule has a check we know, every quantity is used
    header = RULES_FILE.read_text().split("groups:")[0]
    assert all(name in header for name in QUANTITIES)  # documented in the file header
    assert {r.alert for r in load_rules()} >= {"FusionRecCTRDrop", "FusionRecHighFallbackRate"}


def test_the_promql_of_the_rules_passes_promtool() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (apt-get install prometheus)")
    folder = RULES_FILE.parent
    for args in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"]):
        out = subprocess.run([promtool, *args], cwd=folder, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize(
    ("check", "problem"),
    [("ctr_dorp > 0.2", "unknown quantity"), ("ctr_drop = 0.2", "is not"), ("ctr_drop > lots", "is not")],
)
def test_a_rule_without_a_check_we_know_is_refused(tmp_path: Path, check: str, problem: str) -> None:
    rules = {"groups": [{"name": "g", "rules": [{"alert": "A", "expr": "vector(1)", "annotations": {}}]}]}
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rules))
    with pytest.raises(StageInputError, match="no fusionrec_check"):
        load_rules(path)
    rules["groups"][0]["rules"][0]["annotations"]["fusionrec_check"] = check
    path.write_text(yaml.safe_dump(rules))
    with pytest.raises(StageInputError, match=f"alert A: .*{problem}"):
        load_rules(path)


# ---------------------------------------------------------------- the command


def test_command_prints_the_rules_and_fails_on_alert(home: Path) -> None:
    now = datetime.now(UTC)  # the command looks at the hour before now (events sit minutes from the edges)
    _store(home, _baseline(end=now) + _traffic(0, 200, 2, 4, end=now))
    runner = CliRunner()
    obj = {"home": str(home), "globals": {}}
    shown = runner.invoke(monitor_command, ["--window-minutes", "60"], obj=obj)
    assert shown.exit_code == 0, shown.output
    # the command uses the default 24 baseline windows: only 4 exist, still >= min_events impressions
    assert "firing   FusionRecCTRDrop" in shown.output and "CTR 1.00%" in shown.output
    failed = runner.invoke(monitor_command, ["--fail-on-alert", "--json"], obj=obj)
    assert failed.exit_code == 1
    assert json.loads(failed.stdout)["firing"] == ["FusionRecCTRDrop"]
    assert "alert(s) firing: FusionRecCTRDrop" in failed.stderr


def test_events_in_postgresql(home: Path) -> None:
    from tests.conftest import POSTGRES_HOST, POSTGRES_PORT, reachable

    if not reachable(POSTGRES_HOST, POSTGRES_PORT):
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_HOST}:{POSTGRES_PORT}")
    import uuid

    import psycopg2

    database = f"fr_monitor_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(host=POSTGRES_HOST, port=POSTGRES_PORT, user="postgres", dbname="test")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {database}")
    try:
        url = f"postgresql://postgres@{POSTGRES_HOST}:{POSTGRES_PORT}/{database}"
        cfg = RunConfig.from_env(home=home, events_url=url)
        store = open_event_store(cfg)
        old = _traffic(30, 100, 90, 0)  # long before the baseline: not read
        store.add(old + _baseline() + _traffic(0, 200, 8, 4))
        store.close()
        result = monitor(cfg, **SMALL)
        assert result.online.store == f"postgresql://{POSTGRES_HOST}:{POSTGRES_PORT}/{database}"
        assert result.online.baseline.impressions == 800 and result.firing == ["FusionRecCTRDrop"]
        assert not cfg.paths.events_db.exists()
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        admin.close()
