"""The closed loop, end to end in one process: a generated shop is ingested and the retrain pipeline trains,
fuses, registers, approves and promotes a champion; the API runs an A/B experiment of that champion against
the popularity arm; simulated shoppers (pipelines/simulate.py) use it and send feedback; the experiment report
measures the lift; and the next run's ingest takes the feedback in.

Every step is the pipeline's own stage function; nothing here re-implements one. Run it with
``python -m pipelines.closed_loop --events 200000 --shoppers 3000 --workdir /tmp/closed-loop``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import secrets
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from fusionrec.config import RunConfig
from pipelines.stage import StageResult

log = logging.getLogger(__name__)

USERS_PER_EVENT = 1 / 40  # 200k events -> 5,000 users
ITEMS_PER_EVENT = 1 / 100  # 200k events -> 2,000 items
MODELS = ("itemknn", "ease", "ials")  # cheap on 2 cores; the fusions below are built over them
FUSIONS = ("blend", "rrf")
ADMIN_TOKEN_ENV = "FUSIONREC_ADMIN_TOKEN"


@dataclass
class ClosedLoopResult(StageResult):
    events: int
    users: int
    items: int
    selected: str  # the champion the pipeline selected (a fusion or a single model)
    selection_reason: str
    model_version: str
    experiment: str
    simulation: dict[str, Any]  # SimulateResult
    lifts: dict[str, dict[str, Any]]  # metric -> Lift of the champion over popularity
    arms: dict[str, dict[str, Any]]  # arm -> ArmSummary
    feedback_rows: int  # feedback events the next run's ingest appended to the interactions
    seconds: dict[str, float] = field(default_factory=dict)
    report: str = ""  # the experiment report's JSON
    plot: str = ""
    markdown: str = ""
    workdir: str = ""


@contextmanager
def admin_token() -> Iterator[str]:
    """The admin bearer token: the environment's, else a random one set for the duration."""
    existing = os.environ.get(ADMIN_TOKEN_ENV)
    if existing:
        yield existing
        return
    os.environ[ADMIN_TOKEN_ENV] = secrets.token_hex(16)
    try:
        yield os.environ[ADMIN_TOKEN_ENV]
    finally:
        os.environ.pop(ADMIN_TOKEN_ENV, None)


def experiment_body(name: str, champion_share: float = 1 / 3) -> dict[str, Any]:
    """PUT /admin/experiment body: the live champion vs shop-wide popularity (the reference arm) vs what is
    popular in each user's favourite categories (the API's cold-start policy, a stronger baseline)."""
    rest = (1 - champion_share) / 2
    return {
        "name": name,
        "policy": "split",
        "arms": [
            {"name": "champion", "version": "live", "mode": "model", "weight": champion_share},
            {"name": "popularity", "version": "live", "mode": "popular_global", "weight": rest},
            {"name": "category_popularity", "version": "live", "mode": "popular", "weight": rest},
        ],
    }


def closed_loop(
    workdir: Path,
    events: int = 200_000,
    shoppers: int = 3000,
    visits: int = 1,
    users: int | None = None,
    items: int | None = None,
    seed: int = 42,
    models: tuple[str, ...] = MODELS,
    fusions: tuple[str, ...] = FUSIONS,
    n_trials: int = 2,
    k: int = 10,
    fusion_needs_significance: bool = False,
    progress: bool = False,
) -> ClosedLoopResult:
    """Run the loop in ``workdir`` (emptied first: ``shop/``, ``home/``, ``report/``); see the module doc.

    The experiment is about the fused model, so by default a fusion that beats the best single model on
    validation is selected even when its gain is within noise (``fusion_needs_significance=False``; the
    pipeline's default is True). The result says what was selected and why."""
    from pipelines.experiment_report import experiment_report
    from pipelines.generate import GenerateConfig, generate
    from pipelines.ingest import ingest, shop_source
    from pipelines.run import run_pipeline
    from pipelines.simulate import SimulateConfig, SimulationError, open_client, simulate

    users = users or max(100, int(events * USERS_PER_EVENT))
    items = items or max(50, int(events * ITEMS_PER_EVENT))
    shutil.rmtree(workdir, ignore_errors=True)
    shop = workdir / "shop"
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[name] = round(now - clock, 1)
        clock = now
        log.info("closed loop: %s took %.1fs", name, seconds[name])

    made = generate(GenerateConfig(users=users, items=items, events=events, seed=seed, out=shop))
    lap("generate")
    cfg = RunConfig.from_env(
        home=workdir / "home",
        source=shop_source(shop),
        protocol="temporal",
        models=models,
        fusions=fusions,
        n_trials=n_trials,
        auto_approve=True,
        fusion_needs_significance=fusion_needs_significance,
        run_id="closed-loop-1",
        seed=seed,
    )
    ingest(cfg)
    summary = run_pipeline(cfg)
    lap("pipeline")
    selected = summary["fuse"]

    name = f"champion-vs-popularity-{seed}"
    with admin_token() as token, open_client(run_cfg=cfg) as client:
        answer = client.put(
            "/admin/experiment", json=experiment_body(name), headers={"Authorization": f"Bearer {token}"}
        )
        if answer.status_code != 200:
            raise SimulationError(f"PUT /admin/experiment answered {answer.status_code}: {answer.text[:300]}")
        simulated = simulate(
            SimulateConfig(shop=shop, shoppers=shoppers, visits=visits, k=k, seed=seed), client, progress
        )
    lap("simulate")
    report = experiment_report(
        cfg, since=datetime.fromisoformat(simulated.started_at), experiment=name, out_dir=workdir / "report"
    )
    lap("report")
    # the DAG's next run starts with ingest, which appends the feedback to the interactions
    next_run = dataclasses.replace(cfg, run_id="closed-loop-2")
    feedback_rows = ingest(next_run).feedback_rows
    lap("next ingest")
    return ClosedLoopResult(
        events=made.events,
        users=users,
        items=items,
        selected=selected["selected"],
        selection_reason=selected["reason"],
        model_version=summary["register"]["version"],
        experiment=name,
        simulation=simulated.to_dict(),
        lifts={lift.metric: _plain(lift) for lift in report.lifts if lift.arm == "champion"},
        arms={arm.arm: _plain(arm) for arm in report.arms},
        feedback_rows=feedback_rows,
        seconds=seconds,
        report=report.path or "",
        plot=report.plot or "",
        markdown=report.markdown,
        workdir=str(workdir),
    )


def _plain(value: Any) -> dict[str, Any]:
    return dataclasses.asdict(value)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.closed_loop", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--workdir", type=Path, default=Path("closed-loop"), help="emptied first")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--shoppers", type=int, default=3000)
    parser.add_argument("--visits", type=int, default=1, help="visits per shopper")
    parser.add_argument("--users", type=int, default=None, help="default: 1 per 40 events")
    parser.add_argument("--items", type=int, default=None, help="default: 1 per 100 events")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--fusions", default=",".join(FUSIONS))
    parser.add_argument("--n-trials", type=int, default=2)
    parser.add_argument(
        "--fusion-needs-significance",
        action="store_true",
        help="select a fusion only when its validation gain's CI is above 0 (the pipeline's default)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("great_expectations", "feast", "mlflow", "alembic", "dvc", "urllib3", "fsspec", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    result = closed_loop(
        args.workdir,
        events=args.events,
        shoppers=args.shoppers,
        visits=args.visits,
        users=args.users,
        items=args.items,
        seed=args.seed,
        models=tuple(m for m in args.models.split(",") if m),
        fusions=tuple(f for f in args.fusions.split(",") if f),
        n_trials=args.n_trials,
        fusion_needs_significance=args.fusion_needs_significance,
        progress=sys.stderr.isatty(),
    )
    if args.json:
        args.json.write_text(json.dumps(result.to_dict(), indent=2, sort_keys=True))
    print(f"champion: {result.selected} (v{result.model_version}): {result.selection_reason}")
    print(result.markdown)
    print(f"feedback rows taken in by the next ingest: {result.feedback_rows}")
    print(f"plot: {result.plot}\nreport: {result.report}\nseconds: {result.seconds}")


if __name__ == "__main__":
    main()
