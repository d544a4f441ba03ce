"""`fusionrec bench data`: the data plane at a given scale, timed stage by stage with peak memory.

Generates a synthetic shop (pipelines/generate.py), then runs the pipeline's own stages on it in a scratch home:
ingest -> validate (GX gate, quarantine, drift) -> split -> features (Feast snapshots, materialized into the
online store). Nothing here re-implements a stage; it only times them.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from fusionrec.config import RunConfig, StoreKind
from pipelines.resources import measure
from pipelines.stage import StageResult

log = logging.getLogger(__name__)

USERS_PER_EVENT = 0.01  # 10M events -> 100k users; 1M -> 10k users
ITEMS_PER_EVENT = 0.005  # 10M events -> 50k items


@dataclass
class StageTiming:
    seconds: float
    peak_rss_mb: float


@dataclass
class DataBenchResult(StageResult):
    events: int
    users: int
    items: int
    generate_events_per_second: float
    stages: dict[str, StageTiming] = field(
        default_factory=dict
    )  # generate, ingest, validate, split, features
    gate_seconds: float = 0.0  # ingest + validate + features (the target: <= 15 min at 10M)
    peak_rss_mb: float = 0.0  # whole run, this process
    accepted: int = 0
    rejected: int = 0
    online_store: str = "sqlite"
    feature_users: int = 0
    feature_items: int = 0
    workdir: str = ""


def bench_data(
    events: int,
    workdir: Path,
    users: int | None = None,
    items: int | None = None,
    seed: int = 42,
    online_store: StoreKind = "sqlite",
    keep: bool = False,
) -> DataBenchResult:
    """Run the data plane on ``events`` generated events in ``workdir`` (emptied first; removed unless ``keep``)."""
    from pipelines.features import build_features
    from pipelines.generate import GenerateConfig, generate
    from pipelines.ingest import ingest, shop_source
    from pipelines.split import split
    from pipelines.validate import validate

    users = users or max(100, int(events * USERS_PER_EVENT))
    items = items or max(50, int(events * ITEMS_PER_EVENT))
    shutil.rmtree(workdir, ignore_errors=True)
    shop = workdir / "shop"
    stages: dict[str, StageTiming] = {}
    with measure() as whole:
        with measure() as usage:
            made = generate(GenerateConfig(users=users, items=items, events=events, seed=seed, out=shop))
        stages["generate"] = StageTiming(round(usage.seconds, 2), round(usage.peak_rss_mb, 1))
        cfg = RunConfig.from_env(
            home=workdir / "home",
            source=shop_source(shop),
            protocol="temporal",
            online_store=online_store,
            run_id="bench-data",
        )
        results = {}
        for name, stage in (
            ("ingest", ingest),
            ("validate", validate),
            ("split", split),
            ("features", build_features),
        ):
            log.info("bench data: %s", name)
            with measure() as usage:
                results[name] = stage(cfg)
            stages[name] = StageTiming(round(usage.seconds, 2), round(usage.peak_rss_mb, 1))
            log.info("bench data: %s took %.1fs, peak RSS %.0f MB", name, usage.seconds, usage.peak_rss_mb)
    checked, features = results["validate"], results["features"]
    result = DataBenchResult(
        events=made.events,
        users=users,
        items=items,
        generate_events_per_second=round(made.events_per_second, 1),
        stages=stages,
        gate_seconds=round(sum(stages[s].seconds for s in ("ingest", "validate", "features")), 2),
        peak_rss_mb=round(whole.peak_rss_mb, 1),
        accepted=checked.accepted["interactions"],
        rejected=checked.rejected["interactions"],
        online_store=online_store,
        feature_users=features.user_rows,
        feature_items=features.item_rows,
        workdir=str(workdir),
    )
    if not keep:
        if online_store == "redis":  # the scratch project's keys go with the scratch home
            from pipelines.features import feature_store

            feature_store(cfg).teardown()
        shutil.rmtree(workdir, ignore_errors=True)
    return result
