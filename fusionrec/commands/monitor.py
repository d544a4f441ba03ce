"""`fusionrec monitor`: online metrics, service health and the alert rules of infra/monitoring/alerts.yml."""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from typing import Any

import click


@click.command("monitor")
@click.option(
    "--metrics-url",
    default=None,
    help="The API's /metrics, e.g. http://127.0.0.1:8000/metrics (default: env FUSIONREC_METRICS_URL; "
    "none: the service rules are skipped).",
)
@click.option(
    "--window-minutes",
    type=click.IntRange(1),
    default=60,
    show_default=True,
    help="Length of the window checked; the 24 windows before it are the baseline.",
)
@click.option("--fail-on-alert", is_flag=True, help="Exit with code 1 when an alert fires.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole report as JSON.")
@click.pass_context
def monitor(
    ctx: click.Context, metrics_url: str | None, window_minutes: int, fail_on_alert: bool, as_json: bool
) -> None:
    """Compute CTR/CVR of the feedback events (last window vs the windows before, per arm), read fallback
    rate, 5xx rate and latency p99 from the API's /metrics, and evaluate the alert rules.

    Writes reports/monitor.json, monitor.png and monitor.prom (node-exporter textfile); firing alerts are
    listed (and logged). With --fail-on-alert the exit code is 1 when any fired.
    """
    from fusionrec.cli import _call, _config
    from pipelines.monitor import AlertsFiring
    from pipelines.monitor import monitor as run_monitor
    from serving.events import EventStoreError

    cfg = _config(ctx)
    window = timedelta(minutes=window_minutes)
    try:
        result = _call(lambda c: run_monitor(c, metrics_url, window, fail_on_alert=fail_on_alert), cfg)
        failed = False
    except AlertsFiring as exc:
        result, failed = exc.result, True
    except EventStoreError as exc:  # e.g. the PostgreSQL events store is unreachable
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    payload = result.to_dict()
    click.echo(
        json.dumps(payload, indent=2, sort_keys=True, default=str) if as_json else monitor_text(payload)
    )
    if failed:
        click.echo(f"error: {len(result.firing)} alert(s) firing: {', '.join(result.firing)}", err=True)
        sys.exit(1)


def monitor_text(report: dict[str, Any]) -> str:
    """A few lines for a person: rates now vs baseline, service numbers, each rule's outcome."""
    online, service = report["online"], report["service"]
    window, baseline = online["window"], online["baseline"]
    lines = [
        f"status: {report['status']}  window {report['window_start']} .. {report['window_end']}",
        f"events store: {online['store'] or '-'}",
        f"CTR {_pct(window['ctr'])} (baseline {_pct(baseline['ctr'])})  "
        f"CVR {_pct(window['cvr'])} (baseline {_pct(baseline['cvr'])})  "
        f"impressions {window['impressions']:,} (baseline {baseline['impressions']:,})",
    ]
    lines += [
        f"  arm {arm['arm']}: CTR {_pct(arm['window']['ctr'])} (baseline {_pct(arm['baseline']['ctr'])})"
        for arm in online["arms"]
    ]
    if service["url"]:
        lines.append(
            f"service {service['url']}: "
            + (
                f"scrape failed: {service['error']}"
                if service["error"]
                else f"fallback rate {_pct(service['fallback_rate'])}, 5xx rate {_pct(service['error_rate'])}, "
                f"p99 {_ms(service['latency_p99_seconds'])}"
            )
        )
    for rule in report["rules"]:
        value = "-" if rule["value"] is None else f"{rule['value']:.4g}"
        note = f"  ({rule['message']})" if rule["status"] == "skipped" else ""
        lines.append(f"  {rule['status']:<8} {rule['alert']:<28} {rule['check']:<30} value {value}{note}")
    lines.append(f"report: {report['report']}  plot: {report['plot']}")
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.2f} ms"
