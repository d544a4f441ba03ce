"""Drift checks: profiles built chunk by chunk, PSI per dimension, and the stage's warn / fail / off actions."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fusionrec.config import RunConfig
from pipelines.drift import (
    ACTIVITY_BINS,
    CHECKS,
    BatchProfile,
    DataDriftError,
    _IdCounts,
    accept_reference,
    check_drift,
    compare,
    price_bin,
    psi,
    reference_path,
)
from pipelines.stage import StageInputError, load_report

THRESHOLD = 0.2
N_ITEMS = 500
BASE_MIX = {"view": 0.7, "click": 0.15, "cart": 0.1, "purchase": 0.05}


def batch(
    n: int = 20_000,
    *,
    seed: int = 0,
    mix: dict[str, float] = BASE_MIX,
    popularity_seed: int = 1,
    users: int = 2_000,
    price_scale: float = 1.0,
) -> pd.DataFrame:
    """A week of shop events: Zipf item popularity (which item has which rank set by ``popularity_seed``),
    uniform users (fewer users = more events each), log-normal prices."""
    rng = np.random.default_rng(seed)
    ranked_items = np.random.default_rng(popularity_seed).permutation(N_ITEMS)
    ranks = (rng.zipf(1.5, n) - 1) % N_ITEMS
    return pd.DataFrame(
        {
            "user_id": pd.Series(rng.integers(0, users, n)).map("u{}".format),
            "item_id": pd.Series(ranked_items[ranks]).map("i{}".format),
            "rating": np.nan,
            "timestamp": pd.Timestamp("2026-01-05", tz="UTC")
            + pd.to_timedelta(rng.integers(0, 7 * 86_400, n), unit="s"),
            "event_type": rng.choice(list(mix), n, p=list(mix.values())),
            "session_id": None,
            "price": np.round(rng.lognormal(3.0, 1.0, n) * price_scale, 2),
            "quantity": 1.0,
        }
    )


def profile(*frames: pd.DataFrame) -> BatchProfile:
    result = BatchProfile()
    for frame in frames:
        result.update(frame)
    return result


def drifted(new: pd.DataFrame, reference: pd.DataFrame) -> set[str]:
    report = compare(profile(new), profile(reference), THRESHOLD)
    assert [c.name for c in report.checks] == list(CHECKS)
    return {c.name for c in report.drifted}


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return batch(seed=0)


# ---------------------------------------------------------------- PSI and bins


def test_psi_by_hand() -> None:
    # shares (0.5, 0.5) vs (0.25, 0.75): 0.25*ln 2 + (-0.25)*ln(2/3)
    expected = 0.25 * np.log(2) - 0.25 * np.log(2 / 3)
    assert psi(np.array([2, 2]), np.array([1, 3])) == pytest.approx(expected)
    assert psi(np.array([5, 5]), np.array([1, 1])) == 0.0
    # an empty bin counts EPSILON (1e-4), so the PSI is large but finite
    assert 0.5 < psi(np.array([1, 1]), np.array([1, 0])) < 10


def test_price_bins_are_quarter_decades() -> None:
    prices = np.array([0.0, -1.0, 0.005, 0.01, 0.0177, 1.0, 1.5, 2e6])
    # <0.01 -> 0; [0.01, 0.0178) -> 1; 1.0 = 10^0 starts bin 1 + 2*4 = 9; 1.5 < 10^0.25 stays in 9; >=1e6 -> 33
    assert price_bin(prices).tolist() == [0, 0, 0, 1, 1, 9, 9, 33]


# ---------------------------------------------------------------- the profile


def test_update_in_chunks_equals_one_shot(reference: pd.DataFrame) -> None:
    def without_price_sum(p: BatchProfile) -> tuple[dict, float]:  # float sums differ in the last bits
        data = p.to_dict()
        return data, data["price"].pop("sum")

    whole, whole_sum = without_price_sum(profile(reference))
    chunks = [reference.iloc[i : i + 1_537] for i in range(0, len(reference), 1_537)]  # ids span chunks
    chunked, chunked_sum = without_price_sum(profile(*chunks))
    assert chunked == whole and chunked_sum == pytest.approx(whole_sum)
    # categorical columns (a parquet dictionary) and a tiny merge budget give the same profile too
    categorical = reference.astype({"user_id": "category", "item_id": "category", "event_type": "category"})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_IdCounts, "MERGE_AT", 1_000)
        merged, _ = without_price_sum(
            profile(categorical.iloc[:7_000], categorical.iloc[7_000:13_000], categorical.iloc[13_000:])
        )
    assert merged == whole


def test_profile_counts_by_hand() -> None:
    frame = pd.DataFrame(
        {
            "user_id": ["a", "a", "a", "b", "c", "c"],
            "item_id": ["x", "x", "y", "x", "z", "y"],
            "timestamp": pd.to_datetime(["2026-01-02", "2026-01-01", "2026-01-03"] * 2, utc=True),
            "event_type": ["view", "view", "purchase", "view", "cart", "view"],
            "price": [1.0, None, 2.0, 1.0, 30.0, None],
        }
    )
    data = profile(frame.iloc[:4], frame.iloc[4:]).to_dict()
    assert data["rows"] == 6
    assert (data["first_event"], data["last_event"]) == (
        "2026-01-01T00:00:00+00:00",
        "2026-01-03T00:00:00+00:00",
    )
    assert data["event_types"] == {"cart": 1, "purchase": 1, "view": 4}
    assert data["items"] == {"distinct": 3, "events": 6, "top": {"x": 3, "y": 2, "z": 1}}
    # a: 3 events (bin 2-3), b: 1 (bin 1), c: 2 (bin 2-3)
    assert data["users"]["distinct"] == 3
    assert data["users"]["activity"] == [1, 2] + [0] * (ACTIVITY_BINS - 2)
    assert data["price"]["rows"] == 6 and data["price"]["nulls"] == 2 and data["price"]["sum"] == 34.0
    assert data["price"]["bins"][9] == 2 and data["price"]["bins"][10] == 1  # 1.0, 1.0 and 2.0
    assert sum(data["price"]["bins"]) == 4
    assert "user_id" not in json.dumps(data["users"]) and '"a"' not in json.dumps(data)  # no user ids stored


def test_stored_profile_round_trips(reference: pd.DataFrame) -> None:
    live = profile(reference)
    # only the top 30 of 500 items are stored; the compared top-20 union is inside them, so nothing moves
    stored = BatchProfile.from_dict(json.loads(json.dumps(live.to_dict(top_items=30))))
    assert len(stored.item_counts()) == 30
    assert stored.item_summary() == live.item_summary()
    report = compare(live, stored, THRESHOLD)
    assert [c.value for c in report.checks] == [0.0] * len(CHECKS)
    with pytest.raises(ValueError, match="summary"):
        stored.update(reference)


# ---------------------------------------------------------------- one dimension at a time


def test_identical_batches_do_not_drift(reference: pd.DataFrame) -> None:
    report = compare(profile(reference), profile(reference), THRESHOLD)
    assert [c.value for c in report.checks] == [0.0] * len(CHECKS)
    assert report.drifted == []


def test_another_sample_of_the_same_shop_does_not_drift(reference: pd.DataFrame) -> None:
    report = compare(profile(batch(seed=7)), profile(reference), THRESHOLD)
    assert report.drifted == []
    assert all(c.value < 0.05 for c in report.checks), [(c.name, c.value) for c in report.checks]


def test_more_purchases_drift_the_event_mix(reference: pd.DataFrame) -> None:
    shop_sale = {"view": 0.4, "click": 0.1, "cart": 0.15, "purchase": 0.35}
    assert drifted(batch(seed=1, mix=shop_sale), reference) == {"event_type_mix"}
    check = compare(profile(batch(seed=1, mix=shop_sale)), profile(reference), THRESHOLD).checks[0]
    assert re.match(r"purchase: \d\.\d% -> 3\d\.\d%, view", check.detail)  # the bins that moved most first


def test_popularity_moved_to_other_items_drifts(reference: pd.DataFrame) -> None:
    # same items, same Zipf curve, but the popular items are others
    assert drifted(batch(seed=2, popularity_seed=99), reference) == {"item_popularity"}


def test_much_more_active_users_drift(reference: pd.DataFrame) -> None:
    # the same events from a tenth of the users: ~100 events per user instead of ~10
    assert drifted(batch(seed=3, users=200), reference) == {"user_activity"}


def test_prices_times_three_drift(reference: pd.DataFrame) -> None:
    assert drifted(batch(seed=4, price_scale=3.0), reference) == {"price"}
    check = compare(profile(batch(seed=4, price_scale=3.0)), profile(reference), THRESHOLD).checks[-1]
    assert "mean price" in check.detail


def test_missing_price_column_is_skipped_not_drifted(reference: pd.DataFrame) -> None:
    for new, ref in (
        (batch(seed=5).drop(columns="price"), reference),
        (reference, batch(seed=5).drop(columns="price")),
    ):
        price = compare(profile(new), profile(ref), THRESHOLD).checks[-1]
        assert price.name == "price" and price.skipped and not price.drifted and price.value is None
        assert "no price data" in price.detail


def test_threshold_decides(reference: pd.DataFrame) -> None:
    new = profile(batch(seed=6, price_scale=1.3))
    value = compare(new, profile(reference), THRESHOLD).checks[-1].value
    assert not compare(new, profile(reference), value + 1e-9).checks[-1].drifted
    assert compare(new, profile(reference), value - 1e-9).checks[-1].drifted


# ---------------------------------------------------------------- the stage


def config(home: Path, action: str = "warn", run_id: str | None = "run 1") -> RunConfig:
    return RunConfig(home=home, drift_action=action, drift_threshold=THRESHOLD, run_id=run_id)


def test_first_batch_has_no_reference(home: Path, reference: pd.DataFrame) -> None:
    result = check_drift(config(home, "fail"), profile(reference))
    assert result.status == "no_reference" and result.message == "no reference: first batch"
    assert result.checks == []
    assert load_report(home / "reports", "drift")["status"] == "no_reference"
    assert json.loads(Path(result.history).read_text())["new_rows"] == len(reference)
    assert not reference_path(config(home)).exists()  # checking never makes a reference


def test_accept_reference_then_check_compares_against_it(home: Path, reference: pd.DataFrame) -> None:
    accept_reference(config(home, run_id="monday"), profile(reference))
    assert json.loads(reference_path(config(home)).read_text())["run"] == "monday"
    result = check_drift(config(home, "fail", run_id="tuesday"), profile(batch(seed=8)))
    assert result.status == "ok" and result.reference_run == "monday"
    assert [c.name for c in result.checks] == list(CHECKS) and not result.drifted
    assert result.reference_rows == len(reference)
    history = home / "drift" / "tuesday.json"
    assert result.history == str(history) and json.loads(history.read_text())["status"] == "ok"
    assert (
        Path(result.plot) == history.with_suffix(".png")
        and history.with_suffix(".png").stat().st_size > 10_000
    )
    report = load_report(home / "reports", "drift")
    assert report["reference_run"] == "monday" and len(report["checks"]) == len(CHECKS)

    # the next accepted batch replaces the reference
    accept_reference(config(home, run_id="tuesday"), profile(batch(seed=9, price_scale=3.0)))
    assert (
        check_drift(config(home, run_id="wednesday"), profile(batch(seed=10, price_scale=3.0))).status == "ok"
    )


def test_fail_mode_raises_one_line_naming_the_checks(home: Path, reference: pd.DataFrame) -> None:
    accept_reference(config(home), profile(reference))
    new = batch(seed=11, price_scale=3.0, users=200)
    with pytest.raises(DataDriftError) as raised:
        check_drift(config(home, "fail"), profile(new))
    message = str(raised.value)
    assert "\n" not in message
    assert "user_activity PSI" in message and "price PSI" in message and "item_popularity" not in message
    assert str(home / "reports" / "drift.json") in message
    report = load_report(home / "reports", "drift")  # written before raising
    assert report["status"] == "drifted"
    assert {c["name"] for c in report["checks"] if c["drifted"]} == {"user_activity", "price"}


def test_warn_mode_logs_and_returns(
    home: Path, reference: pd.DataFrame, caplog: pytest.LogCaptureFixture
) -> None:
    accept_reference(config(home), profile(reference))
    with caplog.at_level(logging.WARNING, logger="pipelines.drift"):
        result = check_drift(config(home, "warn"), profile(batch(seed=12, price_scale=3.0)))
    assert result.status == "drifted" and [c.name for c in result.drifted] == ["price"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "price PSI" in warnings[0].getMessage()


def test_off_mode_compares_nothing(
    home: Path, reference: pd.DataFrame, caplog: pytest.LogCaptureFixture
) -> None:
    accept_reference(config(home), profile(reference))
    with caplog.at_level(logging.WARNING, logger="pipelines.drift"):
        result = check_drift(config(home, "off"), profile(batch(seed=13, price_scale=3.0)))
    assert result.status == "skipped" and result.checks == [] and result.history is None
    assert not caplog.records
    assert load_report(home / "reports", "drift")["status"] == "skipped"
    assert not (home / "drift").exists()


def test_unreadable_reference_says_what_to_do(home: Path, reference: pd.DataFrame) -> None:
    path = reference_path(config(home))
    path.parent.mkdir(parents=True)
    path.write_text('{"run": "x", "profile": {"version": 0}}')
    with pytest.raises(StageInputError, match="delete it"):
        check_drift(config(home), profile(reference))
