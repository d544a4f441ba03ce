"""Experiment report statistics on hand-worked numbers and on event frames where the truth is known."""

from __future__ import annotations

import json
import math
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fusionrec.config import RunConfig
from pipelines.experiment_report import (
    ArmSummary,
    Estimate,
    ExperimentReport,
    attributed_events,
    experiment_report,
    per_user_table,
    plot_experiment,
    summarise_events,
    t_interval,
    two_proportion_z_test,
    user_level_z_test,
    wilson_interval,
)
from pipelines.stage import StageInputError

T0 = datetime(2026, 7, 1, tzinfo=UTC)


def test_wilson_interval_by_hand() -> None:
    # 10 of 100, z = 1.95996: centre (0.1 + z²/200) / (1 + z²/100) = 0.114797,
    # half-width z / (1 + z²/100) * sqrt(0.1 * 0.9 / 100 + z² / 40000) = 0.059568
    e = wilson_interval(10, 100)
    assert e.value == 0.1
    assert e.low == pytest.approx(0.114797 - 0.059568, abs=1e-5)
    assert e.high == pytest.approx(0.114797 + 0.059568, abs=1e-5)
    assert wilson_interval(0, 50).low == 0.0 and wilson_interval(0, 50).high > 0  # never a zero-width CI
    assert wilson_interval(0, 0).value is None


@pytest.mark.parametrize("trials", [7, 9, 10, 13, 50, 219, 2999])
def test_wilson_interval_holds_zero_and_one_exactly(trials: int) -> None:
    # Rounding once put the low end of 0 of 7 at 2e-17, above the share: the plot's error bar went negative.
    none, every = wilson_interval(0, trials), wilson_interval(trials, trials)
    assert none.low == 0.0 < none.high
    assert every.low < every.high == 1.0


def test_plot_draws_an_arm_without_clicks_whose_interval_rounds_above_zero(tmp_path: Path) -> None:
    # The closed-loop run that found this: 0 clicks in 219 impressions, low end 2e-17 above the share of 0.
    def arm(name: str, clicks: int, impressions: int, low_offset: float = 0.0) -> ArmSummary:
        ctr = wilson_interval(clicks, impressions)
        ctr.low = (ctr.low or 0.0) + low_offset
        empty = Estimate(None)
        return ArmSummary(name, 100, impressions, clicks, 0, 0, 0, 0.0, ctr, ctr, empty, empty, empty)

    arms = [arm("champion", 20, 190), arm("popularity", 0, 219, low_offset=2.2e-17)]
    report = ExperimentReport("exp", "popularity", None, None, None, 409, 0, arms, [], 0.95, 100)
    path = plot_experiment(report, tmp_path / "exp.png")
    assert path.stat().st_size > 10_000


def test_two_proportion_z_test_by_hand() -> None:
    # 50/1000 vs 30/1000: pooled 0.04, se = sqrt(0.04 * 0.96 * 2 / 1000) = 0.0087636, z = 0.02 / se = 2.2822,
    # p = 2 * (1 - Phi(2.2822)) = 0.02248
    assert two_proportion_z_test(50, 1000, 30, 1000) == pytest.approx(0.02248, abs=5e-5)
    assert two_proportion_z_test(30, 1000, 50, 1000) == pytest.approx(0.02248, abs=5e-5)
    assert two_proportion_z_test(40, 1000, 40, 1000) == pytest.approx(1.0)
    assert two_proportion_z_test(1, 0, 1, 10) is None


def test_t_interval_by_hand() -> None:
    # mean 2.5, sd 1.29099, se 0.645497, t(0.975, 3) = 3.182446 -> half-width 2.054260
    e = t_interval(np.array([1.0, 2.0, 3.0, 4.0]))
    assert e.value == 2.5
    assert e.low == pytest.approx(0.445740, abs=1e-5) and e.high == pytest.approx(4.554260, abs=1e-5)


def _frame(rows: list[dict]) -> pd.DataFrame:
    """An events frame with the columns of EventStore.frame."""
    defaults = {
        "event_id": None,
        "timestamp": T0,
        "arm": None,
        "model_version": None,
        "request_id": None,
        "position": None,
        "order_value": None,
        "quantity": None,
    }
    df = pd.DataFrame([defaults | r for r in rows])
    df["event_id"] = [uuid.uuid4().hex for _ in range(len(df))]
    df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True)
    df["order_value"] = df["order_value"].astype("float64")
    return df


def _experiment(
    rates: dict[str, float],
    users: int = 400,
    shown: int = 10,
    seed: int = 0,
    spread: float = 0.0,
    purchase_rate: float = 0.2,
) -> pd.DataFrame:
    """Users split over arms; each sees ``shown`` items in one request and clicks each with the arm's rate
    (times a per-user factor when ``spread`` > 0: heterogeneous shoppers); a share of clicks are bought."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        arm = list(rates)[u % len(rates)]
        request = uuid.uuid4().hex
        keen = rng.lognormal(0.0, spread) if spread else 1.0
        for position, item in enumerate(f"i{i}" for i in rng.choice(500, shown, replace=False)):
            base = {
                "user_id": f"u{u}",
                "item_id": item,
                "arm": arm,
                "request_id": request,
                "model_version": "7",
            }
            rows.append(base | {"event_type": "impression", "position": position})
            if rng.random() < min(rates[arm] * keen, 1.0):
                rows.append(base | {"event_type": "click"})
                if rng.random() < purchase_rate:
                    rows.append(base | {"event_type": "purchase", "order_value": float(rng.integers(10, 60))})
    return _frame(rows)


def test_a_truly_better_arm_shows_a_lift_with_a_ci_above_zero() -> None:
    events = _experiment({"champion": 0.10, "popularity": 0.05}, users=1200)
    reference, arms, lifts = summarise_events(events, resamples=500)
    assert reference == "popularity"  # the default reference when there is one
    by_arm = {a.arm: a for a in arms}
    assert by_arm["champion"].users == by_arm["popularity"].users == 600
    assert by_arm["champion"].impressions == 6000
    assert by_arm["champion"].ctr.low < 0.10 < by_arm["champion"].ctr.high
    assert by_arm["popularity"].ctr.low < 0.05 < by_arm["popularity"].ctr.high
    ctr = next(lift for lift in lifts if lift.metric == "ctr")
    assert ctr.arm == "champion" and ctr.reference == "popularity"
    assert ctr.absolute.value == pytest.approx(by_arm["champion"].ctr.value - by_arm["popularity"].ctr.value)
    assert 0 < ctr.absolute.low < 0.05 < ctr.absolute.high
    assert ctr.relative.value == pytest.approx(ctr.absolute.value / by_arm["popularity"].ctr.value)
    assert ctr.relative.low > 0 and ctr.p_value < 1e-6 and ctr.p_value_users < 1e-6
    cvr = next(lift for lift in lifts if lift.metric == "cvr")
    assert cvr.absolute.low > 0  # purchases follow clicks, so the better arm converts more too


def test_equal_arms_have_a_ci_around_zero() -> None:
    events = _experiment({"a": 0.06, "b": 0.06}, users=1000, seed=0)
    reference, _, lifts = summarise_events(events, resamples=500)
    assert reference == "a"  # no "popularity": the first arm by name
    ctr = next(lift for lift in lifts if lift.metric == "ctr")
    assert ctr.absolute.low < 0 < ctr.absolute.high and ctr.p_value > 0.05


def test_user_level_test_is_wider_when_shoppers_differ() -> None:
    # keen and lukewarm shoppers: impressions of one user are correlated, so the impression-level z-test is
    # overconfident and the users-as-unit test (delta method) gives a larger p-value
    events = _experiment({"a": 0.06, "b": 0.075}, users=800, shown=20, spread=1.0, seed=2)
    table = per_user_table(attributed_events(events))
    a, b = table[table["arm"] == "a"], table[table["arm"] == "b"]
    z = two_proportion_z_test(
        int(b["clicks"].sum()),
        int(b["impressions"].sum()),
        int(a["clicks"].sum()),
        int(a["impressions"].sum()),
    )
    assert user_level_z_test(b, a, "clicks", "impressions") > z


def test_repeated_clicks_on_one_recommendation_count_once() -> None:
    base = {"user_id": "u1", "item_id": "i1", "arm": "x", "request_id": "r1"}
    events = _frame(
        [
            base | {"event_type": "impression"},
            base | {"event_type": "click"},
            base | {"event_type": "click"},  # a double click
            base | {"event_type": "purchase", "order_value": 20.0},
            {"user_id": "u2", "item_id": "i2", "event_type": "click"},  # no arm: not in the experiment
        ]
    )
    _, arms, lifts = summarise_events(events)
    (arm,) = arms
    assert (arm.impressions, arm.clicks, arm.purchases, arm.revenue) == (1, 1, 1, 20.0)
    assert arm.ctr.value == 1.0 and arm.order_value.value == 20.0 and lifts == []


def test_unknown_reference_is_a_clear_error() -> None:
    events = _experiment({"a": 0.1, "b": 0.1}, users=10)
    with pytest.raises(StageInputError, match="reference arm 'zzz' has no events; arms: a, b"):
        summarise_events(events, reference="zzz")


def test_report_from_the_event_store_writes_json_plot_and_table(home: Path) -> None:
    from serving.events import FeedbackEvent, open_event_store

    cfg = RunConfig.from_env(home=home, events_url=None)
    frame = _experiment({"champion": 0.12, "popularity": 0.06}, users=300, seed=1)
    store = open_event_store(cfg)
    late = T0 + timedelta(days=1)
    store.add(
        [
            FeedbackEvent(
                event_type=r.event_type,
                user_id=r.user_id,
                item_id=r.item_id,
                timestamp=late if i % 2 else T0,
                arm=r.arm,
                model_version=r.model_version,
                request_id=r.request_id,
                position=None if pd.isna(r.position) else int(r.position),
                order_value=None if math.isnan(r.order_value) else r.order_value,
            )
            for i, r in enumerate(frame.itertuples())
        ]
    )
    store.close()
    report = experiment_report(cfg, experiment="exp 1", resamples=200)
    assert report.events == len(frame) and report.reference == "popularity"
    assert Path(report.plot).name == "exp_1.png" and Path(report.plot).stat().st_size > 10_000
    saved = json.loads(Path(report.path).read_text())
    assert saved["arms"][0]["arm"] == "champion" and saved["lifts"][0]["metric"] == "ctr"
    assert "| champion |" in report.markdown and "**popularity** (reference)" in report.markdown
    assert "two-proportion z-test" in report.markdown

    later = experiment_report(cfg, since=late, out_dir=home / "elsewhere", resamples=100)
    assert 0 < later.events < report.events and Path(later.plot).parent == home / "elsewhere"
    with pytest.raises(StageInputError, match="no feedback events with an arm since"):
        experiment_report(cfg, since=late + timedelta(days=1))


def _cli():  # -> click.Group with the command registered (the lead adds it in fusionrec/cli.py)
    from fusionrec.cli import cli
    from fusionrec.commands.report import report

    cli.add_command(report)
    return cli


def test_cli_report_experiment(home: Path) -> None:
    from click.testing import CliRunner

    from serving.events import FeedbackEvent, open_event_store

    runner = CliRunner()
    empty = runner.invoke(_cli(), ["--home", str(home), "report", "experiment"])
    assert empty.exit_code == 1 and "error: no feedback events with an arm" in empty.output

    frame = _experiment({"champion": 0.12, "popularity": 0.06}, users=200, seed=4)
    store = open_event_store(RunConfig.from_env(home=home, events_url=None))
    store.add(
        [
            FeedbackEvent(r.event_type, r.user_id, r.item_id, T0, arm=r.arm, request_id=r.request_id)
            if r.event_type != "purchase"
            else FeedbackEvent(r.event_type, r.user_id, r.item_id, T0, arm=r.arm, order_value=r.order_value)
            for r in frame.itertuples()
        ]
    )
    store.close()
    plot = home / "figures" / "ab.png"
    args = ["--home", str(home), "report", "experiment", "--experiment", "ab", "--resamples", "200"]
    shown = runner.invoke(_cli(), [*args, "--plot", str(plot), "--since", "2026-07-01"])
    assert shown.exit_code == 0, shown.output
    assert "experiment ab:" in shown.output and "| champion | CTR |" in shown.output
    assert f"plot: {plot}" in shown.output and plot.exists()
    as_json = runner.invoke(_cli(), [*args, "--json", "--reference", "champion"])
    assert json.loads(as_json.output)["reference"] == "champion"
    bad = runner.invoke(_cli(), [*args, "--since", "yesterday"])
    assert bad.exit_code == 2 and "'yesterday' is not an ISO date" in bad.output
    later = runner.invoke(_cli(), [*args, "--since", "2026-07-02T00:00"])
    assert later.exit_code == 1 and "no feedback events with an arm since 2026-07-02" in later.output
