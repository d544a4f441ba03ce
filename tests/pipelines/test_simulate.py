"""The shopper simulator against the real API (in-process and over HTTP), and the experiment report of what it
sent: an arm that serves each shopper's truly best items beats the popularity arm."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fusionrec.config import RunConfig
from pipelines.experiment_report import experiment_report
from pipelines.generate import GenerateConfig, ShopTruth, generate, load_truth
from pipelines.privacy import stored_user_id
from pipelines.simulate import (
    Shop,
    SimulateConfig,
    examination,
    funnel_probabilities,
    open_client,
    react,
    simulate,
    visit_events,
)
from serving.events import open_event_store
from serving.store import open_store

TOKEN = "test-admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
EXPERIMENT = {
    "name": "oracle-vs-popularity",
    "policy": "split",
    "arms": [
        {"name": "champion", "weight": 0.5},
        {"name": "popularity", "mode": "popular", "weight": 0.5},
    ],
}


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shop")
    generate(GenerateConfig(users=300, items=200, events=20_000, seed=3, out=out))
    return out


def _publish_oracle(cfg: RunConfig, shop: Path) -> None:
    """A serving version whose lists are each shopper's 30 truly best items (by the generator's utility), and
    whose popular list is the shop's most bought items: the champion arm should clearly win."""
    truth = load_truth(shop)
    items = pd.read_parquet(shop / "items.parquet")
    utility = truth.utility_at(np.arange(truth.n_users)[:, None], np.arange(truth.n_items)[None, :])
    best = np.argsort(-utility, axis=1)[:, :30]
    recs = {
        stored_user_id(f"u{u:0{truth.user_id_width}d}", cfg.pseudonymise): [
            (items.item_id[i], float(utility[u, i])) for i in best[u]
        ]
        for u in range(truth.n_users)
    }
    events = pd.read_parquet(shop / "events")
    counts = events.loc[events.event_type == "purchase", "item_id"].value_counts()
    popular = [(item, float(n)) for item, n in counts.head(100).items()]
    context = {
        "item_fields": ["title", "category", "brand", "price"],
        "items": {
            r.item_id: [r.title, r.category, r.brand, float(r.price)] for r in items.itertuples(index=False)
        },
        "popular": [[i, s] for i, s in popular],
        "popular_by_category": {},
        "neighbours": {},
    }
    store = open_store(cfg)
    store.publish("oracle-v1", recs, popular, {"model_version": "oracle"}, context=context)
    store.close()


@pytest.fixture
def served(home: Path, shop: Path, monkeypatch: pytest.MonkeyPatch) -> RunConfig:
    monkeypatch.setenv("FUSIONREC_ADMIN_TOKEN", TOKEN)
    cfg = RunConfig.from_env(home=home, serving_store="sqlite", events_url=None)
    _publish_oracle(cfg, shop)
    return cfg


def test_funnel_mirrors_the_generator(shop: Path) -> None:
    truth: ShopTruth = load_truth(shop)
    users, items = np.repeat(np.arange(5), 4), np.tile(np.arange(4), 5)
    steps = funnel_probabilities(truth, truth.utility_at(users, items))
    assert np.allclose(steps.prod(axis=1), truth.purchase_probability_at(users, items), rtol=1e-5)
    # position bias: the DCG discount, 1 at the top, 1/log2(11) at position 10
    assert examination(np.array([0, 1, 10])) == pytest.approx([1.0, 1 / np.log2(3), 1 / np.log2(12)])


def test_a_visit_becomes_impressions_and_funnel_events(shop: Path) -> None:
    loaded = Shop.load(shop)
    answer = {
        "request_id": "r" * 32,
        "arm": "champion",
        "model_version": "v1",
        "items": [{"item_id": f"i{j:06d}", "price": 10.0 + j} for j in range(10)],
    }
    reaction = react(loaded, 7, answer, np.random.default_rng(0))
    reaction["stage"] = np.array([3, 1, 0, 2, 0, 0, 0, 0, 0, 0])  # bought, clicked, -, carted
    reaction["quantity"] = np.array([2] + [1] * 9)
    events = visit_events("u0000007", answer, reaction, pd.Timestamp("2026-11-01", tz="UTC").to_pydatetime())
    kinds = [(e["event_type"], e["position"]) for e in events if e["event_type"] != "impression"]
    assert kinds == [("click", 0), ("cart", 0), ("purchase", 0), ("click", 1), ("click", 3), ("cart", 3)]
    assert sum(e["event_type"] == "impression" for e in events) == 10
    purchase = next(e for e in events if e["event_type"] == "purchase")
    assert purchase["order_value"] == 20.0 and purchase["quantity"] == 2  # price 10 x 2 units
    assert {e["request_id"] for e in events} == {"r" * 32} and {e["user_id"] for e in events} == {"u0000007"}
    assert len({e["event_id"] for e in events}) == len(events)


def test_closed_loop_in_process_shows_the_better_arm(served: RunConfig, shop: Path) -> None:
    with open_client(run_cfg=served) as client:
        assert client.put("/admin/experiment", json=EXPERIMENT, headers=ADMIN).status_code == 200
        result = simulate(SimulateConfig(shop=shop, shoppers=300, k=10, seed=1, batch=400), client)
    assert result.visits == 300 and result.failed_visits == 0
    assert result.experiments == ["oracle-vs-popularity"]
    assert result.events_accepted == result.events_sent == sum(result.event_types.values())
    champion, popularity = result.arms["champion"], result.arms["popularity"]
    assert 100 < champion["visits"] < 200 and champion["visits"] + popularity["visits"] == 300
    assert champion["impressions"] == 10 * champion["visits"]
    assert champion["expected_ctr"] > 2 * popularity["expected_ctr"]  # truth: the oracle is much better

    store = open_event_store(served)
    frame = store.frame()
    store.close()
    assert len(frame) == result.events_sent
    # the API stored pseudonyms, never the shop's raw ids
    assert not frame["user_id"].str.startswith("u0").any()
    report = experiment_report(served, experiment="oracle-vs-popularity", resamples=300)
    arms = {a.arm: a for a in report.arms}
    assert (
        arms["champion"].clicks == champion["clicks"]
        and arms["popularity"].impressions == popularity["impressions"]
    )
    assert arms["champion"].revenue == pytest.approx(champion["revenue"], abs=0.01)
    ctr = next(lift for lift in report.lifts if lift.metric == "ctr")
    assert ctr.arm == "champion" and ctr.reference == "popularity"
    assert ctr.absolute.low > 0 and ctr.p_value < 0.001
    # the intervals cover the truth the simulator knows (noise-free expected rates)
    assert arms["champion"].ctr.low <= champion["expected_ctr"] <= arms["champion"].ctr.high
    assert arms["popularity"].ctr.low <= popularity["expected_ctr"] <= arms["popularity"].ctr.high

    # a second visit does not get what the shopper bought on the first (the API excludes purchases)
    with open_client(run_cfg=served) as client:
        bought = frame[frame.event_type == "purchase"].iloc[0]
        raw = next(
            f"u{u:07d}"
            for u in range(300)
            if stored_user_id(f"u{u:07d}", served.pseudonymise) == bought.user_id
        )
        answer = client.get(f"/recommendations/{raw}", params={"k": 30}).json()
        assert bought.item_id not in {i["item_id"] for i in answer["items"]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_over_http_with_uvicorn(served: RunConfig, shop: Path) -> None:
    import uvicorn

    from serving.app import create_app

    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(served), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.started, "uvicorn did not start"
        with open_client(url=f"http://127.0.0.1:{port}/") as client:
            result = simulate(SimulateConfig(shop=shop, shoppers=40, k=5, seed=2), client)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert result.visits == 40 and result.experiments == [] and list(result.arms) == ["champion"]
    assert result.notes == ["no experiment is running: every visit was answered by the live version"]
    assert result.events_accepted == result.events_sent >= 200


def test_a_durable_item_is_bought_once(shop: Path) -> None:
    from pipelines.generate import TasteModel

    loaded = Shop.load(shop)
    loaded.truth.model = TasteModel(click=30.0, cart=30.0, purchase=30.0)  # every examined item is bought
    n_items = loaded.truth.n_items
    user, owned_item = divmod(next(iter(loaded.owned)), n_items)  # a durable the shop's history says it owns
    durable = next(
        i for i in range(n_items) if not loaded.consumable[i] and user * n_items + i not in loaded.owned
    )
    consumable = next(i for i in range(n_items) if loaded.consumable[i])

    def stage(item: int, seed: int) -> int:  # shown alone, at the top: always examined
        answer = {"items": [{"item_id": f"i{item:06d}", "price": 5.0}]}
        return int(react(loaded, user, answer, np.random.default_rng(seed))["stage"][0])

    assert (stage(owned_item, 0), stage(durable, 0), stage(consumable, 0)) == (
        1,
        3,
        3,
    )  # owned: stops at click
    assert user * n_items + durable in loaded.owned  # bought now, owned from now on
    assert (stage(durable, 1), stage(consumable, 1)) == (1, 3)  # consumables are bought again


def test_cli_simulate_in_process(served: RunConfig, shop: Path) -> None:
    from click.testing import CliRunner

    from fusionrec.cli import cli
    from fusionrec.commands.simulate import simulate as command

    cli.add_command(command)  # the lead registers it in fusionrec/cli.py
    runner = CliRunner()
    base = ["--home", str(served.home), "simulate", "--shop", str(shop), "--shoppers", "20", "--no-progress"]
    shown = runner.invoke(cli, [*base, "--in-process", "--k", "5"])
    assert shown.exit_code == 0, shown.output
    assert (
        "20 visits by 20 shoppers" in shown.output and "champion: 20 visits, 100 impressions" in shown.output
    )
    as_json = json.loads(runner.invoke(cli, [*base, "--in-process", "--json", "--seed", "3"]).output)
    assert as_json["visits"] == 20 and as_json["events_accepted"] == as_json["events_sent"]
    both = runner.invoke(cli, [*base, "--in-process", "--url", "http://127.0.0.1:9"])
    assert both.exit_code == 2 and "exactly one of --url URL and --in-process" in both.output
    down = runner.invoke(cli, [*base, "--url", "http://127.0.0.1:9"])  # nothing listens on port 9
    assert down.exit_code == 1 and "the API is unreachable" in down.output


@pytest.mark.slow
def test_closed_loop_through_the_pipeline(tmp_path: Path) -> None:
    """Generate -> ingest -> the retrain pipeline (auto-approved) -> promote -> experiment champion vs popularity
    -> simulated shoppers -> report -> the next ingest. The report must measure what the truth says: each arm's
    CTR interval covers the simulator's noise-free expected CTR, and the lift's interval covers the true
    difference. (Which arm wins is the shop's business: see the closing note.)"""
    from pipelines.closed_loop import closed_loop

    result = closed_loop(
        tmp_path / "loop",
        events=30_000,
        shoppers=600,
        seed=7,
        models=("itemknn", "ease"),
        fusions=("blend",),
        n_trials=1,
    )
    simulated = result.simulation
    assert result.model_version == "1" and result.selected in ("itemknn", "ease", "blend")
    assert simulated["visits"] == 600 and simulated["events_accepted"] == simulated["events_sent"]
    assert set(result.arms) == {"champion", "popularity", "category_popularity"}
    assert sum(a["users"] for a in result.arms.values()) == 600
    for name, arm in result.arms.items():
        expected = simulated["arms"][name]["expected_ctr"]
        assert arm["ctr"]["low"] <= expected <= arm["ctr"]["high"], name
    ctr = result.lifts["ctr"]
    truth = simulated["arms"]["champion"]["expected_ctr"] - simulated["arms"]["popularity"]["expected_ctr"]
    assert ctr["absolute"]["low"] <= truth <= ctr["absolute"]["high"]
    assert 0 <= ctr["p_value"] <= 1 and ctr["reference"] == "popularity"
    # every click, cart and purchase flows into the next run's interactions
    funnel = simulated["event_types"]
    assert result.feedback_rows == funnel["click"] + funnel["cart"] + funnel["purchase"]
    assert Path(result.plot).exists() and Path(result.report).exists()
