"""`fusionrec bench serve`: latency of the serving API under open-loop load, beside the floor of its stack.

In one run, on loopback and a Redis-backed serving store, it measures three things with the same client and
the same request schedule (``rate`` per second, ``requests`` recorded after ``warmup``):

* ``ours``: ``GET /recommendations/{user}?<query>`` of the real app (``serving.app``), filters, diversity and
  explanations on by default;
* the thin baseline (``serving.baseline``): one Redis GET of a pre-serialized top-100 list, returned as is;
  its ``async`` (redis.asyncio) and ``sync`` (blocking redis-py) variants are both measured and the faster
  (lower p99) is *the* baseline, the stricter comparison;
* ``redis_get``: the raw Redis GET of the same keys, the floor under both.

Phases alternate over ``rounds`` (the order reversed every other round) and each figure is the median of its
rounds. Target: ours p99 <= 1.5 x the baseline's p99 and <= 5 ms. The load generator (pipelines/open_loop.py)
runs in its own process, each server is its own one-worker uvicorn process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import secrets
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fusionrec.config import RunConfig
from pipelines.stage import StageResult
from pipelines.uvicorn_servers import HOST, Server, server_env, start_server, stop_server, wait_ready

if (
    TYPE_CHECKING
):  # numpy (data) and asyncio (load generator) are imported when used: the CLI reads this module
    from pipelines.bench_serve_data import PreparedStore
    from pipelines.open_loop import LoadSpec, WireProtocol

log = logging.getLogger(__name__)

DEFAULT_QUERY = (
    "k=10&min_price=1&max_price=500&exclude_purchased=true&in_stock=true&diversity=0.3&explain=true"
)
TARGET_RATIO = 1.5  # ours p99 <= this x the baseline's p99
TARGET_P99_MS = 5.0  # ... and never above this
OURS, REDIS_GET = "ours", "redis_get"
BASELINES = ("baseline_async", "baseline_sync")
PHASES = (OURS, *BASELINES, REDIS_GET)


class BenchServeError(RuntimeError):
    """The benchmark cannot run or its set-up is wrong (server does not start, answers are not what was
    published); the message says what to check."""


@dataclass
class LatencySummary:
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float


@dataclass
class PhaseRound:
    """One phase in one round."""

    round: int
    latency: LatencySummary
    requests: int
    errors: int
    warmup_errors: int
    achieved_rate: float  # answered requests per second over the recorded part
    dispatch_lag_p50_ms: float  # client's own delay from due time to the request written
    dispatch_lag_p99_ms: float
    max_in_flight: int
    server_cpu_percent: float | None  # the uvicorn process (None for redis_get)
    redis_cpu_percent: float | None  # redis-server, from INFO cpu
    client_cpu_percent: float
    error_examples: list[str] = field(default_factory=list)


@dataclass
class PhaseResult:
    """A phase over all rounds: the latency figures are the medians of the rounds' figures."""

    name: str
    target: str  # what was requested, e.g. "GET /recommendations/{user}?k=10&..."
    latency: LatencySummary
    requests: int  # all rounds
    errors: int  # all rounds, warm-up included
    achieved_rate: float
    response_bytes: int
    server_cpu_percent: float | None
    rounds: list[PhaseRound] = field(default_factory=list)


@dataclass
class BenchServeResult(StageResult):
    requests: int  # recorded per phase and round
    rate: float
    warmup: int
    rounds: int
    connections: int
    users: int
    items: int
    query: str
    phases: dict[str, PhaseResult]
    baseline: str  # the baseline variant compared against (lower p99)
    ratio_p50: float | None  # ours / baseline
    ratio_p99: float | None
    target_ratio: float = TARGET_RATIO
    target_p99_ms: float = TARGET_P99_MS
    passed: bool | None = None  # None when ours was not measured
    errors: int = 0
    seconds: float = 0.0
    machine: dict[str, Any] = field(default_factory=dict)
    sample_answer: dict[str, Any] = field(default_factory=dict)  # ours, for one user (first 2 items)
    notes: list[str] = field(default_factory=list)


# --- figures -----------------------------------------------------------------------------------------


def summarise(latencies: Sequence[float]) -> LatencySummary:
    """p50/p95/p99 (nearest rank: the smallest sample with at least that share at or below it), max and mean,
    from latencies in seconds to milliseconds."""
    if not len(latencies):
        nan = float("nan")
        return LatencySummary(nan, nan, nan, nan, nan)
    import numpy as np

    ms = np.asarray(latencies, dtype=float) * 1000.0
    p50, p95, p99 = np.percentile(ms, [50, 95, 99], method="inverted_cdf")
    return LatencySummary(*(round(float(v), 4) for v in (p50, p95, p99, ms.max(), ms.mean())))


def median_summary(summaries: Sequence[LatencySummary]) -> LatencySummary:
    """Field by field median over rounds."""
    return LatencySummary(
        *(
            round(statistics.median(getattr(s, f.name) for s in summaries), 4)
            for f in dataclasses.fields(LatencySummary)
        )
    )


def ratio(ours: float, baseline: float) -> float:
    return round(ours / baseline, 3) if baseline > 0 else float("inf")


def passes(ours_p99_ms: float, baseline_p99_ms: float) -> bool:
    """The target: ours p99 <= TARGET_RATIO x the baseline's p99, and <= TARGET_P99_MS in any case."""
    slack = 1e-9  # 1.5 x 1.2 is 1.7999999999999998 in floats; figures are rounded far coarser than this
    return ours_p99_ms <= TARGET_RATIO * baseline_p99_ms + slack and ours_p99_ms <= TARGET_P99_MS


def start_servers(
    cfg: RunConfig, prepared: PreparedStore, workdir: Path, include_ours: bool, stack: contextlib.ExitStack
) -> dict[str, Server]:
    """Start ours (if asked) and both baseline variants, all at once (their imports overlap)."""
    servers: dict[str, Server] = {}
    if include_ours:
        env = server_env(
            FUSIONREC_REDIS_URL=cfg.redis_url,
            FUSIONREC_HOME=str(cfg.home),
            FUSIONREC_SERVING_STORE="redis",
            FUSIONREC_PSEUDONYMISE="true",
            FUSIONREC_PSEUDONYM_KEY=prepared.pseudonym_key,
            FUSIONREC_EVENTS_URL="",  # the scratch home's SQLite events, never the production database
        )
        servers[OURS] = start_server(OURS, "serving.app:app_from_env", env, workdir)
        stack.callback(stop_server, servers[OURS])
    for name in BASELINES:
        env = server_env(
            FUSIONREC_REDIS_URL=cfg.redis_url,
            FUSIONREC_BASELINE_PREFIX=prepared.baseline_prefix,
            FUSIONREC_BASELINE_CLIENT=name.split("_")[1],
        )
        servers[name] = start_server(name, "serving.baseline:baseline_app_from_env", env, workdir)
        stack.callback(stop_server, servers[name])
    return servers


def check_answers(
    servers: dict[str, Server], prepared: PreparedStore, query: str
) -> tuple[dict[str, int], dict[str, Any]]:
    """Wait for every server and check one answer each: ours must serve the published version for a known user
    (not the cold-start fallback), the baseline the user's full list. Returns the answers' sizes and ours
    (its first two items)."""
    from pipelines.bench_serve_data import TOP_N

    user = prepared.user_ids[0]
    sizes: dict[str, int] = {}
    sample: dict[str, Any] = {}
    for name, server in servers.items():
        if name == OURS:
            body = wait_ready(server, f"/recommendations/{user}?{query}")
            sample = json.loads(body)
            if sample.get("cold_start") or sample.get("model_version") != prepared.version:
                raise BenchServeError(
                    f"the app does not serve the benchmark's version {prepared.version} to a known user "
                    f"(got model_version={sample.get('model_version')!r}, cold_start={sample.get('cold_start')})"
                    ": its store prefix or pseudonym key differs from what was published"
                )
            if not sample.get("items"):
                raise BenchServeError(f"the app answered no items for {user} with ?{query}")
            sample["items"] = sample["items"][:2]
        else:
            body = wait_ready(server, f"/top/{user}")
            if len(json.loads(body)["items"]) != TOP_N:
                raise BenchServeError(f"{name} answered a list that is not the published top-{TOP_N}")
        sizes[name] = len(body)
    return sizes, sample


# --- phases -------------------------------------------------------------------------------------------


def phase_payloads(name: str, prepared: PreparedStore, sequence: Sequence[int], query: str) -> list[bytes]:
    from pipelines.open_loop import http_get, redis_get

    users = prepared.user_ids
    if name == OURS:
        return [http_get(f"/recommendations/{users[u]}?{query}") for u in sequence]
    if name == REDIS_GET:
        return [redis_get(f"{prepared.baseline_prefix}:top:{users[u]}") for u in sequence]
    return [http_get(f"/top/{users[u]}") for u in sequence]


def phase_target(name: str, query: str) -> str:
    if name == OURS:
        return f"GET /recommendations/{{user}}?{query}"
    if name == REDIS_GET:
        return "Redis GET <baseline key> (raw RESP)"
    return f"GET /top/{{user}} (thin FastAPI, {name.split('_')[1]} redis-py, one GET)"


def _cpu_seconds(pid: int | None) -> float | None:
    import psutil

    if pid is None:
        return None
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return times.user + times.system


def _redis_cpu_seconds(client: Any) -> float | None:
    try:
        info = client.info("cpu")
    except Exception:  # CPU figures are a nicety; INFO may be disabled
        return None
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _percent(after: float | None, before: float | None, seconds: float) -> float | None:
    if after is None or before is None or seconds <= 0:
        return None
    return round(100.0 * (after - before) / seconds, 1)


def run_phase(
    spec: LoadSpec,
    round_no: int,
    server: Server | None,
    redis_client: Any,
) -> PhaseRound:
    """One open-loop run in the load-generator process, with the server's and Redis's CPU use around it."""
    pid = server.process.pid if server else None
    cpu, redis_cpu, wall = _cpu_seconds(pid), _redis_cpu_seconds(redis_client), time.monotonic()
    from pipelines.open_loop import run_load_in_subprocess

    samples = run_load_in_subprocess(spec)
    wall = time.monotonic() - wall
    lags = summarise(samples.lags)
    return PhaseRound(
        round=round_no,
        latency=summarise(samples.latencies),
        requests=samples.requests,
        errors=samples.errors,
        warmup_errors=samples.warmup_errors,
        achieved_rate=round(len(samples.latencies) / samples.seconds, 1) if samples.seconds > 0 else 0.0,
        dispatch_lag_p50_ms=lags.p50_ms,
        dispatch_lag_p99_ms=lags.p99_ms,
        max_in_flight=samples.max_in_flight,
        server_cpu_percent=_percent(_cpu_seconds(pid), cpu, wall),
        redis_cpu_percent=_percent(_redis_cpu_seconds(redis_client), redis_cpu, wall),
        client_cpu_percent=round(100.0 * samples.client_cpu_seconds / wall, 1),
        error_examples=samples.error_examples,
    )


def phase_order(phases: Sequence[str], round_no: int) -> list[str]:
    """The phases in order for round 0, 2, ... and reversed for 1, 3, ...: ours is not always first."""
    return list(phases) if round_no % 2 == 0 else list(reversed(phases))


def combine(name: str, target: str, rounds: list[PhaseRound], response_bytes: int) -> PhaseResult:
    cpu = [r.server_cpu_percent for r in rounds if r.server_cpu_percent is not None]
    return PhaseResult(
        name=name,
        target=target,
        latency=median_summary([r.latency for r in rounds]),
        requests=sum(r.requests for r in rounds),
        errors=sum(r.errors + r.warmup_errors for r in rounds),
        achieved_rate=round(statistics.median(r.achieved_rate for r in rounds), 1),
        response_bytes=response_bytes,
        server_cpu_percent=round(statistics.median(cpu), 1) if cpu else None,
        rounds=rounds,
    )


# --- the benchmark ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    requests: int
    rate: float
    warmup: int
    rounds: int
    connections: int
    query: str
    seed: int


def bench_serve(
    cfg: RunConfig,
    requests: int = 10_000,
    rate: float = 500.0,
    *,
    warmup: int = 500,
    rounds: int = 2,
    users: int = 10_000,
    items: int = 5_000,
    query: str = DEFAULT_QUERY,
    connections: int = 32,
    seed: int = 42,
    include_ours: bool = True,
    json_out: Path | None = None,
) -> BenchServeResult:
    """Measure ours, the thin baseline (both variants) and the raw Redis GET, ``rounds`` times each, at
    ``rate`` requests/s open-loop, ``requests`` recorded per phase and round after ``warmup``.

    Uses ``cfg.redis_url``; everything is written in a scratch home and under fresh Redis prefixes, all
    removed at the end. The result is saved to ``cfg.paths.reports/bench_serve.json`` and ``json_out``."""
    from pipelines.bench_serve_data import TOP_N, drop_keys, prepare_store

    if min(requests, rounds, users, connections) < 1 or rate <= 0 or warmup < 0 or items < TOP_N:
        raise BenchServeError(
            f"need requests, rounds, users and connections >= 1, rate > 0, warmup >= 0 and items >= {TOP_N}"
        )
    redis_address = _raw_redis_address(cfg.redis_url)
    plan = _Plan(requests, rate, warmup, rounds, connections, query.lstrip("?"), seed)
    started, machine = time.monotonic(), _machine()
    workdir = Path(tempfile.mkdtemp(prefix="fusionrec-bench-serve-"))
    # A scratch home: its own serving-store prefix, rules file and SQLite events, never the production ones.
    scratch = dataclasses.replace(cfg, home=workdir / "home", serving_store="redis", events_url=None)
    baseline_prefix = f"fusionrec-bench:{uuid.uuid4().hex[:12]}"
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        redis_client = _redis_client(cfg.redis_url)
        stack.callback(redis_client.close)
        stack.callback(drop_keys, cfg.redis_url, [baseline_prefix])
        stack.callback(_drop_serving_store, scratch)
        log.info("bench serve: publishing %d users x %d of %d items", users, TOP_N, items)
        prepared = prepare_store(
            scratch, users, items, seed, pseudonym_key=secrets.token_hex(16), baseline_prefix=baseline_prefix
        )
        servers = start_servers(scratch, prepared, workdir, include_ours, stack)
        sizes, sample = check_answers(servers, prepared, plan.query)
        sizes[REDIS_GET] = sizes[BASELINES[0]]
        per_phase = _run_rounds(plan, prepared, servers, redis_address, redis_client)
    phases = {
        name: combine(name, phase_target(name, plan.query), rs, sizes[name]) for name, rs in per_phase.items()
    }
    result = BenchServeResult(
        requests=requests,
        rate=rate,
        warmup=warmup,
        rounds=rounds,
        connections=connections,
        users=users,
        items=items,
        query=plan.query,
        phases=phases,
        errors=sum(p.errors for p in phases.values()),
        seconds=round(time.monotonic() - started, 1),
        machine=machine | {"load_average_at_end": [round(v, 2) for v in os.getloadavg()]},
        sample_answer=sample,
        notes=[
            "latency = scheduled send time -> last byte of the answer (open loop); figures are medians over rounds",
            "client, servers and Redis share the machine's cores; dispatch_lag is the client's own delay",
        ],
        **compare(phases),
    )
    result.save(cfg.paths.reports, "bench_serve")
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result.to_dict(), indent=2, sort_keys=True))
    return result


def compare(phases: dict[str, PhaseResult]) -> dict[str, Any]:
    """The baseline variant with the lower p99, ours / baseline ratios and the verdict (None without ours)."""
    baseline = min(BASELINES, key=lambda b: phases[b].latency.p99_ms)
    base, ours = phases[baseline].latency, phases.get(OURS)
    if ours is None:
        return {"baseline": baseline, "ratio_p50": None, "ratio_p99": None, "passed": None}
    return {
        "baseline": baseline,
        "ratio_p50": ratio(ours.latency.p50_ms, base.p50_ms),
        "ratio_p99": ratio(ours.latency.p99_ms, base.p99_ms),
        "passed": passes(ours.latency.p99_ms, base.p99_ms),
    }


def _run_rounds(
    plan: _Plan,
    prepared: PreparedStore,
    servers: dict[str, Server],
    redis_address: tuple[str, int],
    redis_client: Any,
) -> dict[str, list[PhaseRound]]:
    import numpy as np

    from pipelines.open_loop import LoadSpec

    phases = [p for p in PHASES if p in servers or p == REDIS_GET]
    per_phase: dict[str, list[PhaseRound]] = {p: [] for p in phases}
    rng = np.random.default_rng(plan.seed)
    for round_no in range(plan.rounds):
        # Uniformly drawn users, the same sequence for every phase of the round.
        users = rng.integers(0, len(prepared.user_ids), plan.warmup + plan.requests).tolist()
        for name in phase_order(phases, round_no):
            server = servers.get(name)
            host, port = (HOST, server.port) if server else redis_address
            payloads = phase_payloads(name, prepared, users, plan.query)
            protocol: WireProtocol = "http" if server else "redis"
            spec = LoadSpec(protocol, host, port, payloads, plan.rate, plan.warmup, plan.connections)
            log.info("bench serve: round %d/%d, %s", round_no + 1, plan.rounds, name)
            done = run_phase(spec, round_no, server, redis_client)
            per_phase[name].append(done)
            log.info(
                "bench serve: %s p50 %.3f ms, p99 %.3f ms, %d errors",
                name,
                done.latency.p50_ms,
                done.latency.p99_ms,
                done.errors + done.warmup_errors,
            )
    return per_phase


def _drop_serving_store(cfg: RunConfig) -> None:
    """Delete the scratch serving store's keys, on every shard when ``FUSIONREC_SERVING_SHARDS`` shards it."""
    from serving.store import open_store

    store = open_store(cfg)
    try:
        store.drop_all()
    finally:
        store.close()


def _raw_redis_address(url: str) -> tuple[str, int]:
    """Where the raw GET phase connects. It speaks plain RESP: no AUTH, no SELECT, so db 0 without password."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme != "redis" or parts.password or parts.path.strip("/") not in ("", "0"):
        raise BenchServeError(
            f"the raw Redis GET phase needs a plain redis:// URL on db 0 without password, got {parts.scheme}://"
            f"{parts.hostname}:{parts.port or 6379}{parts.path}"
        )
    return parts.hostname or "localhost", parts.port or 6379


def _redis_client(url: str) -> Any:
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise BenchServeError(f"Redis at {_raw_redis_address(url)} is unreachable: {exc}") from exc
    return client


def _machine() -> dict[str, Any]:
    import importlib.util
    import platform

    import uvicorn

    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return {
        "cpus": os.cpu_count(),
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
        "python": platform.python_version(),
        "uvicorn": f"{uvicorn.__version__} ({loop}, {http})",
        "platform": platform.platform(),
    }
