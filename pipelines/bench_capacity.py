"""`fusionrec bench capacity`: how each stage's time and memory grow with the data, and where one node stops.

For each size a synthetic shop (users and items in fixed ratios to events, as in `fusionrec bench data`)
goes through the pipeline's own stage functions in a scratch home: ingest -> validate (GX) -> split ->
features (Feast build + materialize) -> matrices (splits -> sparse matrices: the train stage's input) -> one
fit each of EASE, ItemKNN and iALS with fixed parameters -> top-N for every user (iALS) -> serving context
(catalogue, popular lists, content neighbours) -> publish (explanation anchors + the serving store).

Each stage runs in its own Python process (``python -m pipelines.bench_capacity STAGE JOB``), so its peak RSS
(``VmHWM``) is its own. Seconds exclude start-up, imports and reading the stage's input back from disk; memory
is fitted above the process's RSS after its imports.
pipelines/capacity_model.py fits and projects the figures.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from pipelines.bench_data import ITEMS_PER_EVENT, USERS_PER_EVENT
from pipelines.capacity_model import (
    LIMIT_MEMORY_MB,
    LIMIT_SECONDS,
    CostModel,
    PowerLaw,
    Scale,
    breaking_events,
    cost_model,
)

log = logging.getLogger(__name__)

_MB = 1024 * 1024
TOP_N = 100  # the serving store's list length (RunConfig.top_n_serving)
# One fit each, no tuning: the models' defaults, EASE uncapped so its items^2 growth shows.
MODEL_PARAMS: dict[str, dict[str, Any]] = {
    "ease": {"l2": 500.0, "max_items": 10_000_000},
    "itemknn": {"neighbors": 200, "shrink": 10.0, "weighting": "tfidf"},
    "ials": {"factors": 64, "iterations": 15, "regularization": 30.0, "alpha": 3.0},
}
TARGETS = (Scale(1e9, 1e8, 1e7), Scale(1e9, 1e8, 1e6))  # 1B events, 100M users, 10M or 1M items


@dataclass(frozen=True)
class StageSpec:
    """A measured stage: what drives its time and memory, the exponents its algorithm predicts, which engine
    takes over beyond one node, and what to import before the clock starts."""

    name: str
    label: str
    time: tuple[str, float]  # (driver, exponent its algorithm predicts)
    memory: tuple[str, float]
    takeover: str
    imports: tuple[str, ...] = ()


STAGES: tuple[StageSpec, ...] = (
    StageSpec(
        "ingest", "ingest", ("events", 1), ("users+items", 1),
        "a Spark job: partitioned Parquet in and out, keyed-hash pseudonymisation as a column expression",
        ("pipelines.ingest", "pyarrow.parquet", "tqdm"),
    ),
    StageSpec(
        "validate", "validate (GX)", ("events", 1), ("events", 1),
        "GX on its Spark execution engine, per partition; duplicates by a Spark anti-join instead of the "
        "in-memory key set",
        ("pipelines.validate", "great_expectations", "pipelines.drift"),
    ),
    StageSpec(
        "split", "split (temporal)", ("events", 1), ("events", 1),
        "Spark window functions (row_number over each user's events by time), splits written partitioned",
        ("pipelines.split", "pyarrow.parquet"),
    ),
    StageSpec(
        "features", "features (Feast build + materialize)", ("events", 1), ("events", 1),
        "Feast with the Spark offline store (PostgreSQL up to ~10^8 rows), Spark materialization into Redis",
        ("pipelines.features", "feast"),
    ),
    StageSpec(
        "matrices", "train input (splits -> sparse matrices)", ("events", 1), ("events", 1),
        "no single matrix: each trainer reads the partitioned splits in its own engine",
        ("pipelines.splitdata",),
    ),
    StageSpec(
        "train_ease", "train EASE (uncapped)", ("items", 3), ("items", 2),
        "none: items^2 floats (40 GB at 100k items); keep EASE on the top ~50k items or hand over to "
        "ItemKNN / iALS",
        ("models.ease",),
    ),
    StageSpec(
        "train_itemknn", "train ItemKNN", ("events^2/users", 1), ("events", 1),
        "item-block similarities as Airflow mapped tasks (KubernetesExecutor) or in Spark; LSH neighbours",
        ("models.itemknn",),
    ),
    StageSpec(
        "train_ials", "train iALS", ("events", 1), ("events", 1),
        "Spark MLlib ALS (implicitPrefs) or iALS sharded by users; two-tower: pipelines/distributed.py",
        ("models.ials", "implicit.cpu.als", "threadpoolctl"),
    ),
    StageSpec(
        "score", "top-N for all users (iALS)", ("users*items", 1), ("users", 1),
        "Airflow mapped tasks over user shards, each streaming its lists out; ANN retrieval (FAISS/ScaNN) "
        "instead of scoring every item",
        ("pipelines.bundle",),
    ),
    StageSpec(
        "context", "serving context (catalogue, content neighbours)", ("items", 2), ("items", 1),
        "approximate nearest neighbours over item text embeddings, per category shard",
        ("serving.context", "sklearn.feature_extraction.text"),
    ),
    StageSpec(
        # anchors slice the seen-matrix column of every candidate: popular items' columns grow with users
        "publish", "publish (anchors + serving store)", ("users", 2), ("users", 1),
        "anchors from a precomputed item-neighbour table (linear in users), then one publish task per "
        "Redis shard (FUSIONREC_SERVING_SHARDS), each streaming its user shard",
        ("serving.context", "serving.store", "redis"),
    ),
)  # fmt: skip
STAGE_NAMES = tuple(s.name for s in STAGES)
SPECS = {s.name: s for s in STAGES}
STORE_TAKEOVER = "sharded Redis (FUSIONREC_SERVING_SHARDS or Redis Cluster), one shard per 24 GB"


class CapacityBenchError(RuntimeError):
    """A stage process failed; the message carries the tail of its log."""


@dataclass
class CapacityJob:
    """What a stage process needs (written as JSON beside the scratch home)."""

    workdir: str
    events: int
    users: int
    items: int
    seed: int = 42
    online_store: str = "sqlite"
    serving_store: str = "sqlite"
    redis_url: str = "redis://127.0.0.1:6379/0"
    top_n: int = TOP_N
    offline_store: str = "file"

    @property
    def scratch(self) -> Path:  # files passed between stage processes
        return Path(self.workdir) / "capacity"

    def config(self) -> Any:
        from fusionrec.config import RunConfig
        from pipelines.ingest import shop_source

        return RunConfig.from_env(
            home=Path(self.workdir) / "home",
            source=shop_source(Path(self.workdir) / "shop"),
            protocol="temporal",
            online_store=self.online_store,
            offline_store=self.offline_store,
            serving_store=self.serving_store,
            serving_shards="",  # one Redis: its MEMORY USAGE is the store's size per user
            redis_url=self.redis_url,
            top_n_serving=self.top_n,
            run_id="bench-capacity",
        )


@dataclass
class StageRun:
    seconds: float  # wall time of the stage's work
    cpu_seconds: float  # user + system CPU of the process during that work (all threads)
    peak_rss_mb: float  # the process's peak RSS (its own process: imports, input and work)
    base_rss_mb: float  # RSS after imports, before any input was read
    load_average: float  # 1-minute load average when the stage started
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def work_mb(self) -> float:
        return max(self.peak_rss_mb - self.base_rss_mb, 0.0)


@dataclass
class SizeRun:
    events: int  # accepted interactions
    users: int  # rows of the training matrix
    items: int  # columns of the training matrix
    generated: dict[str, int]
    generate_seconds: float
    stages: dict[str, StageRun]

    @property
    def scale(self) -> Scale:
        return Scale(self.events, self.users, self.items)


# --- the stages (each: read input untimed, do the work inside ``timed()``, write output untimed) ------------


class _Clock:
    """Wall and CPU time of the blocks run under ``timed()``."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.cpu_seconds = 0.0

    @contextmanager
    def timed(self) -> Iterator[None]:
        wall, cpu = time.perf_counter(), _cpu_seconds()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - wall
            self.cpu_seconds += _cpu_seconds() - cpu


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _ingest(job: CapacityJob, clock: _Clock) -> dict[str, float]:
    from pipelines.ingest import ingest

    with clock.timed():
        result = ingest(job.config())
    return {"rows": result.rows.get("interactions", 0)}


def _validate(job: CapacityJob, clock: _Clock) -> dict[str, float]:
    from pipelines.validate import validate

    with clock.timed():
        result = validate(job.config())
    return {"accepted": result.accepted["interactions"], "rejected": result.rejected["interactions"]}


def _split(job: CapacityJob, clock: _Clock) -> dict[str, float]:
    from pipelines.split import split

    with clock.timed():
        result = split(job.config())
    return {"train_rows": result.rows["train"]}


def _features(job: CapacityJob, clock: _Clock) -> dict[str, float]:
    from pipelines.features import build_features

    with clock.timed():
        result = build_features(job.config())
    return {
        "compute_seconds": getattr(result, "compute_seconds", 0.0),
        "materialize_seconds": getattr(result, "materialize_seconds", 0.0),
        "user_rows": result.user_rows,
        "item_rows": result.item_rows,
    }


def _matrices(job: CapacityJob, clock: _Clock) -> dict[str, float]:
    import numpy as np
    import scipy.sparse as sp

    from pipelines.splitdata import load_split_data

    with clock.timed():
        data = load_split_data(job.config(), with_features=False)
    job.scratch.mkdir(parents=True, exist_ok=True)
    sp.save_npz(job.scratch / "train.npz", data.train.matrix, compressed=False)
    sp.save_npz(job.scratch / "seen.npz", data.seen, compressed=False)
    np.savez(
        job.scratch / "ids.npz", users=data.train.user_ids.astype(str), items=data.train.item_ids.astype(str)
    )
    return {"users": data.train.n_users, "items": data.train.n_items, "nnz": data.train.matrix.nnz}


def _read_matrices(job: CapacityJob) -> tuple[Any, Any]:
    import numpy as np
    import scipy.sparse as sp

    from models.base import InteractionData

    ids = np.load(job.scratch / "ids.npz")
    matrix = sp.load_npz(job.scratch / "train.npz").tocsr()
    data = InteractionData(matrix, ids["users"].astype(object), ids["items"].astype(object))
    return data, sp.load_npz(job.scratch / "seen.npz").tocsr()


def _train(name: str) -> Callable[[CapacityJob, _Clock], dict[str, float]]:
    def run(job: CapacityJob, clock: _Clock) -> dict[str, float]:
        from models.registry import create_model
        from pipelines.bundle import Bundle

        data, seen = _read_matrices(job)
        with clock.timed():
            model = create_model(name, **MODEL_PARAMS[name]).fit(data)
        if name == "ials":  # the model the score and publish stages serve
            Bundle.from_training(model, data, repeats=False, seen=seen).save(job.scratch / "bundle")
        kept = getattr(model, "kept_items_", None)
        return {"items_fitted": data.n_items if kept is None else len(kept)}

    return run


def _read_bundle(job: CapacityJob) -> Any:
    from pipelines.bundle import Bundle

    return Bundle.load(job.scratch / "bundle")


def _score(job: CapacityJob, clock: _Clock) -> dict[str, float]:
    bundle = _read_bundle(job)
    with clock.timed():
        recs = bundle.recommend_known(job.top_n)
    (job.scratch / "recs.pickle").write_bytes(pickle.dumps(recs, protocol=pickle.HIGHEST_PROTOCOL))
    return {"users": len(recs)}


def _context(job: CapacityJob, clock: _Clock) -> dict[str, float]:
    from serving.context import build_context

    bundle, cfg = _read_bundle(job), job.config()
    with clock.timed():
        context = build_context(bundle, cfg.paths.validated / "items.parquet", job.top_n)
    (job.scratch / "context.pickle").write_bytes(pickle.dumps(context, protocol=pickle.HIGHEST_PROTOCOL))
    return {"catalogue_items": len(context["items"]), "items_with_neighbours": len(context["neighbours"])}


def _publish(job: CapacityJob, clock: _Clock) -> dict[str, float]:
    from serving.context import anchored_candidates
    from serving.store import open_store

    bundle, cfg = _read_bundle(job), job.config()
    recs = pickle.loads((job.scratch / "recs.pickle").read_bytes())
    context = pickle.loads((job.scratch / "context.pickle").read_bytes())
    with clock.timed():
        started = time.perf_counter()
        anchored = anchored_candidates(bundle, recs)
        anchored_at = time.perf_counter()
        store = open_store(cfg)
        store.publish(
            f"capacity-{job.events}",
            anchored,
            bundle.popular(job.top_n),
            {"bench": "capacity"},
            context=context,
        )
        written_at = time.perf_counter()
    extra = {
        "anchor_seconds": round(anchored_at - started, 3),
        "write_seconds": round(written_at - anchored_at, 3),
        "store_mb": round(_store_bytes(store, cfg) / _MB, 2),
        "users": len(anchored),
    }
    store.close()
    return extra


def _store_bytes(store: Any, cfg: Any) -> int:
    """Bytes the published version takes in the serving store: Redis MEMORY USAGE of its keys, or the
    SQLite file."""
    if store.kind == "sqlite":
        return sum(
            p.stat().st_size for p in cfg.paths.serving_db.parent.glob(cfg.paths.serving_db.name + "*")
        )
    client = store._redis  # the store's own connection; the keys are under its prefix
    return sum(client.memory_usage(k, samples=0) or 0 for k in client.scan_iter(match=f"{store.prefix}:*"))


def _teardown(job: CapacityJob, clock: _Clock) -> dict[str, float]:
    """Not measured: remove what the size left in Redis (Feast online rows, the serving store's keys)."""
    cfg = job.config()
    if job.online_store == "redis":
        from pipelines.features import feature_store

        if (cfg.paths.features / "registry.db").exists():
            feature_store(cfg).teardown()
    if job.serving_store == "redis":
        from serving.store import open_store

        store = open_store(cfg)
        store.drop_all()  # type: ignore[attr-defined]
        store.close()
    return {}


RUNNERS: dict[str, Callable[[CapacityJob, _Clock], dict[str, float]]] = {
    "ingest": _ingest,
    "validate": _validate,
    "split": _split,
    "features": _features,
    "matrices": _matrices,
    "train_ease": _train("ease"),
    "train_itemknn": _train("itemknn"),
    "train_ials": _train("ials"),
    "score": _score,
    "context": _context,
    "publish": _publish,
    "teardown": _teardown,
}


def run_stage(name: str, job: CapacityJob) -> StageRun:
    """Run one stage in this process (meant to be a fresh one: see ``main``) and measure it."""
    import importlib

    for module in SPECS[name].imports if name in SPECS else ():
        importlib.import_module(module)
    load = os.getloadavg()[0]
    base = psutil.Process().memory_info().rss / _MB
    clock = _Clock()
    extra = RUNNERS[name](job, clock)
    peak = _peak_rss_mb()
    return StageRun(
        round(clock.seconds, 3),
        round(clock.cpu_seconds, 2),
        round(peak, 1),
        round(base, 1),
        round(load, 2),
        extra,
    )


def _peak_rss_mb() -> float:
    """This process's peak RSS since its exec: VmHWM. (``ru_maxrss`` would not do: Linux carries the forking
    parent's high-water mark over into the child at exec.)"""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux; no /proc elsewhere


def run_in_child(name: str, job: CapacityJob, log_file: Path, timeout: float) -> StageRun:
    """Run ``name`` in a fresh Python process, so its peak RSS is this stage's alone."""
    job_file = Path(job.workdir) / "job.json"
    job_file.write_text(json.dumps(asdict(job)))
    out = Path(job.workdir) / f"stage-{name}.json"
    out.unlink(missing_ok=True)
    with log_file.open("a") as stderr:
        stderr.write(f"--- {name}\n")
        stderr.flush()
        code = subprocess.call(
            [sys.executable, "-m", "pipelines.bench_capacity", name, str(job_file), str(out)],
            stdout=stderr,
            stderr=stderr,
            timeout=timeout,
            env=os.environ | {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"},
        )
    if code != 0 or not out.exists():
        tail = "".join(log_file.read_text().splitlines(keepends=True)[-15:])
        raise CapacityBenchError(f"stage {name} failed (exit {code}); end of {log_file}:\n{tail}")
    return StageRun(**json.loads(out.read_text()))


def run_here(name: str, job: CapacityJob) -> StageRun:
    """Run ``name`` here (tests): peak RSS is sampled over the stage, above the RSS it started with."""
    from pipelines.resources import measure

    with measure() as usage:
        run = run_stage(name, job)
    run.base_rss_mb = round(usage.start_rss_mb, 1)
    run.peak_rss_mb = round(usage.peak_rss_mb, 1)
    return run


MIN_EVENTS = 2000  # below this the generator's minimum catalogue would bend the ratios


def size_shape(events: int) -> tuple[int, int]:
    """(users, items) of a generated shop with ``events`` events: the `bench data` ratios."""
    return max(20, int(events * USERS_PER_EVENT)), max(10, int(events * ITEMS_PER_EVENT))


def bench_size(
    events: int,
    workdir: Path,
    seed: int = 42,
    online_store: str = "sqlite",
    serving_store: str = "sqlite",
    redis_url: str = "redis://127.0.0.1:6379/0",
    offline_store: str = "file",
    isolate: bool = True,
    keep: bool = False,
    timeout: float = 3600.0,
) -> SizeRun:
    """Generate ``events`` events (users and items in the `bench data` ratios) in ``workdir`` (emptied
    first) and run every stage on them; ``isolate``: each stage in its own process."""
    from pipelines.generate import GenerateConfig, generate

    users, items = size_shape(events)
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    started = time.perf_counter()
    generate(GenerateConfig(users=users, items=items, events=events, seed=seed, out=workdir / "shop"))
    generate_seconds = time.perf_counter() - started
    job = CapacityJob(
        str(workdir), events, users, items, seed, online_store, serving_store, redis_url, TOP_N, offline_store
    )
    log_file = workdir.parent / f"capacity-{events}.log"
    log_file.unlink(missing_ok=True)
    stages: dict[str, StageRun] = {}
    try:
        for name in (*STAGE_NAMES, "teardown"):
            run = run_in_child(name, job, log_file, timeout) if isolate else run_here(name, job)
            if name != "teardown":
                stages[name] = run
                log.info(
                    "bench capacity %s: %s %.1fs, peak RSS %.0f MB (base %.0f), load %.1f",
                    f"{events:,}",
                    name,
                    run.seconds,
                    run.peak_rss_mb,
                    run.base_rss_mb,
                    run.load_average,
                )
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    shape = stages["matrices"].extra
    return SizeRun(
        events=int(stages["validate"].extra["accepted"]),
        users=int(shape["users"]),
        items=int(shape["items"]),
        generated={"events": events, "users": users, "items": items},
        generate_seconds=round(generate_seconds, 2),
        stages=stages,
    )


# --- the model: fits, projections, what breaks first -------------------------------------------------------


def stage_models(runs: list[SizeRun]) -> dict[str, dict[str, CostModel]]:
    """Per stage, the fitted models of wall time (``time``), CPU time (``cpu``: what the stage needs whatever
    else runs on the cores) and memory; plus ``store`` (serving-store bytes vs users)."""
    scales = [r.scale for r in runs]
    models: dict[str, dict[str, CostModel]] = {}
    for spec in STAGES:
        measured = [r.stages[spec.name] for r in runs]
        # Memory is fitted above the interpreter and libraries (which do not grow), and projected with them.
        base = max(m.base_rss_mb for m in measured)
        driver, theory = spec.time
        models[spec.name] = {
            "time": cost_model(driver, scales, [m.seconds for m in measured], theory),
            "cpu": cost_model(driver, scales, [m.cpu_seconds for m in measured], theory),
            "memory": cost_model(
                spec.memory[0], scales, [m.work_mb for m in measured], spec.memory[1], offset=base
            ),
        }
    store = [r.stages["publish"].extra.get("store_mb", 0.0) for r in runs]
    models["store"] = {"memory": cost_model("users", scales, store, 1.0)}
    return models


def _law(model: CostModel) -> dict[str, Any]:
    return {
        "driver": model.driver,
        "a": float(f"{model.law.a:.6g}"),
        "b": round(model.law.b, 3),
        "r2": round(model.law.r2, 4),
        "theory_b": model.theory_b,
        "offset": round(model.offset, 1),
    }


def _round(value: Any) -> Any:
    return float(f"{value:.4g}") if isinstance(value, float) else value


def project(models: dict[str, dict[str, CostModel]], target: Scale) -> dict[str, Any]:
    """Every stage's projected wall time, CPU time and memory at ``target``, the one-node limits it breaks
    there, and along the way (users and items growing with events in ``target``'s ratios) the event count at
    which it first breaks each; the stage that breaks first. Limits are judged on CPU time (the wall time of
    one dedicated core), not on wall time measured beside other work, and on memory."""
    stages: dict[str, Any] = {}
    for name, spec in SPECS.items():
        cpu, memory = models[name]["cpu"], models[name]["memory"]
        limits = (("24 h", cpu, LIMIT_SECONDS), ("24 GB", memory, LIMIT_MEMORY_MB))
        row: dict[str, Any] = {
            "seconds": models[name]["time"].fitted(target),
            "cpu_seconds": cpu.fitted(target),
            "cpu_seconds_theory": cpu.theory(target),
            "memory_mb": memory.fitted(target),
            "memory_mb_theory": memory.theory(target),
            # "over": the fitted projection breaks a limit; "may_break": only the complexity projection does.
            "over": [label for label, model, limit in limits if model.fitted(target) > limit],
            "may_break": [
                label
                for label, model, limit in limits
                if model.fitted(target) <= limit < model.theory(target)
            ],
            "breaks_at_events": {
                f"{what}_{projection}": breaking_events(model, limit, target, projection)
                for what, model, limit in (("cpu", cpu, LIMIT_SECONDS), ("memory", memory, LIMIT_MEMORY_MB))
                for projection in ("fitted", "worst")  # worst: the larger of fitted and complexity
            },
            "takeover": spec.takeover,
        }
        stages[name] = {k: _round(v) for k, v in row.items()}
    store_mb = models["store"]["memory"].worst(target)
    return {
        "events": target.events,
        "users": target.users,
        "items": target.items,
        "stages": stages,
        "pipeline": {
            key: _round(sum(s[key] for s in stages.values()))
            for key in ("seconds", "cpu_seconds", "cpu_seconds_theory")
        },
        "first_break": {p: first_break(stages, p) for p in ("fitted", "worst")},
        "store": {
            "memory_mb": _round(store_mb),
            "shards": max(1, math.ceil(store_mb / LIMIT_MEMORY_MB)),
            "takeover": STORE_TAKEOVER,
        },
    }


def first_break(stages: dict[str, Any], projection: str) -> dict[str, Any] | None:
    """The (stage, resource, events) that crosses a one-node limit at the fewest events, or None."""
    found = [
        (events, name, key.split("_")[0])
        for name, row in stages.items()
        for key, events in row["breaks_at_events"].items()
        if key.endswith(projection) and events is not None
    ]
    if not found:
        return None
    events, name, what = min(found)
    return {"stage": name, "resource": what, "events": events}


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 1024**3, 1),
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }


def capacity_document(runs: list[SizeRun], stores: dict[str, str], started: dict[str, Any]) -> dict[str, Any]:
    """The benchmark's JSON: machine, measured sizes, fitted models and the projections to ``TARGETS``."""
    models = stage_models(runs)
    return {
        "benchmark": "capacity",
        "machine": {**started, "load_average_at_end": machine()["load_average"]},
        "ratios": {"users_per_event": USERS_PER_EVENT, "items_per_event": ITEMS_PER_EVENT},
        "stores": stores,
        "model_params": MODEL_PARAMS,
        "top_n": TOP_N,
        "limits": {"memory_mb": LIMIT_MEMORY_MB, "seconds": LIMIT_SECONDS},
        "stages": {s.name: s.label for s in STAGES},
        "sizes": [
            {
                **{k: v for k, v in asdict(r).items() if k != "stages"},
                "stages": {n: asdict(s) for n, s in r.stages.items()},
            }
            for r in runs
        ],
        "fits": {name: {what: _law(m) for what, m in pair.items()} for name, pair in models.items()},
        "projections": [project(models, target) for target in TARGETS],
    }


def load_runs(document: dict[str, Any]) -> list[SizeRun]:
    """The measurements of a capacity JSON, to fit and project again without measuring."""
    return [
        SizeRun(**{**size, "stages": {n: StageRun(**s) for n, s in size["stages"].items()}})
        for size in document["sizes"]
    ]


def reanalyse(json_in: Path, json_out: Path | None = None, plot_out: Path | None = None) -> dict[str, Any]:
    """Fit and project the measurements of ``json_in`` again (e.g. after a model change); same outputs."""
    old = json.loads(json_in.read_text())
    document = capacity_document(load_runs(old), old["stores"], old["machine"])
    document["machine"]["load_average_at_end"] = old["machine"]["load_average_at_end"]
    document["wall_seconds"], document["isolated"] = old["wall_seconds"], old["isolated"]
    if json_out:
        json_out.write_text(json.dumps(document, indent=2) + "\n")
    if plot_out:
        write_plot(document, plot_out)
    return document


def bench_capacity(
    sizes: list[int],
    workdir: Path,
    json_out: Path | None = None,
    plot_out: Path | None = None,
    isolate: bool = True,
    **size_options: Any,
) -> dict[str, Any]:
    """Run ``bench_size`` for every size (smallest first), then fit and project; writes ``json_out`` and the
    log-log plot ``plot_out`` when given. ``size_options`` go to ``bench_size``."""
    if len(set(sizes)) < 2 or min(sizes) < MIN_EVENTS:
        raise ValueError(
            f"need at least two distinct sizes of >= {MIN_EVENTS} events to fit growth exponents"
        )
    started = time.perf_counter()
    at_start = machine()
    stores = {k: size_options.get(k, "sqlite") for k in ("online_store", "serving_store")}
    stores["offline_store"] = size_options.get("offline_store", "file")
    runs: list[SizeRun] = []
    for events in sorted(set(sizes)):
        runs.append(bench_size(events, workdir / f"size-{events}", isolate=isolate, **size_options))
        if json_out:  # the measurements so far, in case a later size fails
            json_out.parent.mkdir(parents=True, exist_ok=True)
            json_out.write_text(
                json.dumps(
                    {"benchmark": "capacity", "partial": True, "sizes": [asdict(r) for r in runs]}, indent=2
                )
            )
    document = capacity_document(runs, stores, at_start)
    document["wall_seconds"] = round(time.perf_counter() - started, 1)
    document["isolated"] = isolate
    if json_out:
        json_out.write_text(json.dumps(document, indent=2) + "\n")
    if plot_out:
        write_plot(document, plot_out)
    return document


# --- the plot --------------------------------------------------------------------------------------------


PANELS = (  # (fit, measured field, y label, limit or None)
    ("time", "seconds", "wall seconds (beside other work)", None),
    ("cpu", "cpu_seconds", "CPU seconds", LIMIT_SECONDS),
    ("memory", "peak_rss_mb", "peak RSS, MB", LIMIT_MEMORY_MB),
)


def write_plot(document: dict[str, Any], path: Path) -> None:
    """Wall time, CPU time and peak memory vs events, log-log: measured (solid) and, dashed, the fitted law
    projected to the first target along its users and items per event; red: the one-node limits."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(17, 5.5))
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(PANELS))
    target, sizes = TARGETS[0], document["sizes"]
    events = [s["events"] for s in sizes]
    path_events = [events[-1] * (target.events / events[-1]) ** (i / 24) for i in range(25)]
    palette = matplotlib.colormaps["tab20"]
    for ax, (key, field_, label, limit) in zip(axes, PANELS, strict=True):
        for index, name in enumerate(STAGE_NAMES):
            fit = document["fits"][name][key]
            law = CostModel(
                fit["driver"], PowerLaw(fit["a"], fit["b"], fit["r2"]), 1.0, 1.0, 1.0, fit["offset"]
            )
            colour = palette(index % 20)
            values = [s["stages"][name][field_] for s in sizes]
            ax.plot(events, values, "o-", color=colour, label=name, markersize=4)
            projected = [law.fitted(Scale.along(e, target)) for e in path_events]
            ax.plot(path_events, projected, "--", color=colour, linewidth=0.8)
        if limit:
            ax.axhline(limit, color="red", linewidth=1)
            ax.text(events[0], limit * 1.3, "24 h" if key == "cpu" else "24 GB", color="red")
        ax.set(xscale="log", yscale="log", xlabel="events", ylabel=label)
        ax.grid(True, which="major", alpha=0.3)
    axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.suptitle(
        f"Stage cost vs size ({document['machine']['cpus']} cores). Solid: measured; dashed: fitted law "
        "along "
        f"{target.users / target.events:g} users and {target.items / target.events:g} items per event to "
        f"{count_label(target.events)} events",
        fontsize=10,
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def count_label(n: float) -> str:
    units = (("B", 1e9), ("M", 1e6), ("k", 1e3))
    return next((f"{n / size:g}{suffix}" for suffix, size in units if n >= size), f"{n:g}")


def main(argv: list[str]) -> None:
    """``python -m pipelines.bench_capacity STAGE JOB_JSON OUT_JSON``: one measured stage, in this process."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    name, job_file, out = argv
    job = CapacityJob(**json.loads(Path(job_file).read_text()))
    Path(out).write_text(json.dumps(asdict(run_stage(name, job))))


if __name__ == "__main__":
    main(sys.argv[1:])
