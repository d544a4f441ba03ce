"""`fusionrec bench serve`: percentile and ratio math, the open-loop client (latency from the scheduled time, so
a slow server's queue shows), the synthetic data, and one small real run against the thin baseline and Redis."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from fusionrec.commands.bench_serve import serve, serve_table
from fusionrec.config import RunConfig
from pipelines.bench_serve import (
    LatencySummary,
    PhaseResult,
    bench_serve,
    compare,
    median_summary,
    passes,
    phase_order,
    ratio,
    summarise,
)
from pipelines.bench_serve_data import TOP_N, synthetic_catalogue, synthetic_top_lists, synthetic_users
from pipelines.open_loop import LoadSpec, http_get, parse_http, parse_redis, redis_get, run_load

# --- figures -----------------------------------------------------------------------------------------


def test_percentiles_are_nearest_rank_in_milliseconds() -> None:
    latencies = [ms / 1000 for ms in range(100, 0, -1)]  # 1..100 ms, any order
    summary = summarise(latencies)
    # nearest rank: p50 is the 50th of 100 sorted values, p99 the 99th (no interpolation towards 100)
    assert summary == LatencySummary(p50_ms=50.0, p95_ms=95.0, p99_ms=99.0, max_ms=100.0, mean_ms=50.5)
    assert summarise([0.002]).p99_ms == 2.0


def test_median_of_rounds_is_taken_field_by_field() -> None:
    rounds = [LatencySummary(1, 2, 3, 9, 1), LatencySummary(2, 4, 5, 7, 2), LatencySummary(3, 3, 4, 8, 3)]
    assert median_summary(rounds) == LatencySummary(2, 3, 4, 8, 2)
    assert median_summary(rounds[:2]).p99_ms == 4.0  # even count: mean of the middle two


def test_target_is_a_ratio_and_an_absolute_cap() -> None:
    assert ratio(1.5, 1.0) == 1.5
    assert passes(1.5, 1.0)  # exactly 1.5 x passes
    assert not passes(1.51, 1.0)
    assert not passes(5.5, 4.0)  # within 1.5 x a slow baseline, but above 5 ms


def _phase(name: str, p50: float, p99: float) -> PhaseResult:
    return PhaseResult(name, "", LatencySummary(p50, p50, p99, p99, p50), 10, 0, 500.0, 10, None)


def test_compare_uses_the_faster_baseline_variant() -> None:
    phases = {
        "ours": _phase("ours", 0.9, 1.8),
        "baseline_async": _phase("baseline_async", 0.7, 1.4),
        "baseline_sync": _phase("baseline_sync", 0.6, 1.2),
        "redis_get": _phase("redis_get", 0.1, 0.1),
    }
    assert compare(phases) == {
        "baseline": "baseline_sync",
        "ratio_p50": 1.5,
        "ratio_p99": 1.5,
        "passed": True,
    }
    phases["ours"] = _phase("ours", 0.9, 1.9)
    assert compare(phases)["passed"] is False
    del phases["ours"]
    assert compare(phases) == {
        "baseline": "baseline_sync",
        "ratio_p50": None,
        "ratio_p99": None,
        "passed": None,
    }


def test_phase_order_alternates_between_rounds() -> None:
    assert phase_order(["a", "b", "c"], 0) == ["a", "b", "c"]
    assert phase_order(["a", "b", "c"], 1) == ["c", "b", "a"]
    assert phase_order(["a", "b", "c"], 2) == ["a", "b", "c"]


# --- wire formats ------------------------------------------------------------------------------------


def test_http_parser_waits_for_the_whole_body() -> None:
    answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 7\r\n\r\n[1,2,3]"
    assert parse_http(answer[:20]) is None
    assert parse_http(answer[:-1]) is None
    assert parse_http(answer + b"HTTP/1.1") == (len(answer), None, 7)  # the next answer's bytes stay
    used, error, _ = parse_http(b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno")
    assert used == 47 and error is not None and error.startswith("HTTP 404")
    assert http_get("/top/u1") == b"GET /top/u1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def test_redis_parser_reads_bulk_strings_and_flags_nil_and_errors() -> None:
    assert redis_get("k:1") == b"*2\r\n$3\r\nGET\r\n$3\r\nk:1\r\n"
    assert parse_redis(b"$5\r\nhel") is None
    assert parse_redis(b"$5\r\nhello\r\n") == (11, None, 5)
    assert parse_redis(b"$-1\r\n")[1] == "Redis GET returned nil (missing key)"
    assert "ERR" in parse_redis(b"-ERR wrong\r\n")[1]


# --- the open-loop client against a deliberately slow server ----------------------------------------


class _SlowHttp(socketserver.ThreadingTCPServer):
    """Keep-alive HTTP server answering one request at a time (a global lock), each after ``service`` s;
    ``/missing`` answers 404."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, service: float) -> None:
        self.service = service
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _SlowHandler)


class _SlowHandler(socketserver.StreamRequestHandler):
    server: _SlowHttp

    def handle(self) -> None:
        while True:
            line = self.rfile.readline()
            if not line:
                return
            while self.rfile.readline() not in (b"\r\n", b""):
                pass
            with self.server.lock:
                time.sleep(self.server.service)
            status = b"404 Not Found" if b"/missing" in line else b"200 OK"
            self.wfile.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 2\r\n\r\nok")


@pytest.fixture
def slow_server() -> Iterator[_SlowHttp]:
    server = _SlowHttp(service=0.02)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("connections", [8, 1], ids=["server-queue", "client-queue"])
def test_latency_counts_from_the_scheduled_time_so_queueing_shows(
    slow_server: _SlowHttp, connections: int
) -> None:
    """20 ms per answer, one at a time, asked for one every 10 ms: the server falls 10 ms further behind with
    every request. A closed-loop client would report ~20 ms each; from the scheduled time, request i waits
    about 10 ms x i more. With one connection the queue is in the client; it must count all the same."""
    n = 24
    spec = LoadSpec(
        "http",
        "127.0.0.1",
        slow_server.server_address[1],
        [http_get("/x")] * n,
        rate=100.0,
        connections=connections,
    )
    samples = run_load(spec)
    assert samples.errors == 0 and len(samples.latencies) == n
    first, last = samples.latencies[0], samples.latencies[-1]
    assert 0.015 < first < 0.2
    assert last > first + 0.8 * 0.010 * (n - 1)  # grew ~10 ms per request
    assert samples.seconds >= 0.8 * n * 0.020  # the server's pace, not the schedule's
    if connections == 1:
        assert samples.lags[-1] > 0.1  # written late: waited for the only connection
    else:
        assert max(samples.lags[: connections - 1]) < 0.05  # written on time, the wait was the server's


def test_failed_answers_are_errors_and_warmup_is_not_recorded(slow_server: _SlowHttp) -> None:
    slow_server.service = 0.0
    payloads = (
        [http_get("/missing")] + [http_get("/x")] * 5 + [http_get("/missing")] * 2 + [http_get("/x")] * 2
    )
    spec = LoadSpec(
        "http", "127.0.0.1", slow_server.server_address[1], payloads, rate=200.0, warmup=1, connections=4
    )
    samples = run_load(spec)
    assert samples.requests == 9 and samples.errors == 2 and samples.warmup_errors == 1
    assert len(samples.latencies) == 7
    assert all(e.split(": ", 1)[1].startswith("HTTP 404") for e in samples.error_examples)


def test_a_closed_port_fails_loudly() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(OSError):
        run_load(LoadSpec("http", "127.0.0.1", port, [http_get("/")] * 2, rate=10.0))


# --- synthetic data ---------------------------------------------------------------------------------


def test_synthetic_lists_are_distinct_popular_first_and_seeded() -> None:
    catalogue = synthetic_catalogue(500, seed=3)
    lists = list(synthetic_top_lists(50, catalogue, seed=3, chunk=16))
    assert len(lists) == 50 and all(len(set(top.tolist())) == TOP_N for top in lists)
    assert [t.tolist() for t in synthetic_top_lists(50, catalogue, seed=3)] == [t.tolist() for t in lists]
    mean_rank = sum(top[:10].mean() for top in lists) / 50
    assert mean_rank < 250  # long tail: the heads of the lists lean to the popular (low-index) items


def test_synthetic_users_buy_from_their_lists_and_anchors_are_purchases() -> None:
    catalogue = synthetic_catalogue(300, seed=1)
    users = list(synthetic_users(20, catalogue, seed=1, pseudonym_key=b"k" * 32))
    for user in users:
        top20 = {item for item, _ in user.ranked[:20]}
        assert len(top20 & set(user.bought)) >= 2  # so exclude_purchased has something to remove
        assert set(user.anchors) <= {*user.bought, None}
        assert user.stored_id != user.raw_id and len(user.stored_id) == 16
    assert len({u.stored_id for u in users}) == 20


# --- CLI ---------------------------------------------------------------------------------------------


def test_serve_help_and_table() -> None:
    result = CliRunner().invoke(serve, ["--help"])
    assert result.exit_code == 0 and "--requests" in result.output and "PASS/FAIL" in result.output
    phases = {
        name: _phase(name, p50, p99)
        for name, p50, p99 in [("ours", 0.9, 1.8), ("baseline_async", 0.7, 1.4), ("baseline_sync", 0.6, 1.2)]
    }
    document = {
        "requests": 10,
        "rounds": 1,
        "rate": 500.0,
        "warmup": 5,
        "users": 10,
        "connections": 4,
        "query": "k=10",
        "errors": 0,
        "target_ratio": 1.5,
        "target_p99_ms": 5.0,
        "phases": {name: asdict(phase) for name, phase in phases.items()},
        **compare(phases),
    }
    table = serve_table(document)
    assert "baseline_sync *" in table and "p99 x1.50" in table and table.endswith("PASS")


# --- a small real run --------------------------------------------------------------------------------


def _bench_keys(url: str) -> set[bytes]:
    """The baseline's keys and the serving-store keys of benchmark versions."""
    client = redis.Redis.from_url(url)
    return {
        key
        for match in ("fusionrec-bench:*", "fusionrec:*:v:bench-*")
        for key in client.scan_iter(match=match)
    }


@pytest.mark.slow  # ~12 s on an idle machine, more on shared cores
def test_small_real_run_against_the_baseline_and_redis(tmp_path: Path, redis_url: str) -> None:
    """300 requests at 200/s against both baseline variants and raw Redis (not our app, which other work
    changes): no errors, the rate held, plausible loopback latencies, every key removed afterwards."""
    cfg = RunConfig.from_env(home=tmp_path / "home", redis_url=redis_url)
    before = _bench_keys(redis_url)
    out = tmp_path / "serve.json"
    result = bench_serve(
        cfg, 300, 200.0, warmup=50, rounds=1, users=200, items=200, include_ours=False, json_out=out
    )
    assert set(result.phases) == {"baseline_async", "baseline_sync", "redis_get"}
    assert (
        result.errors == 0
        and result.passed is None
        and result.baseline in ("baseline_async", "baseline_sync")
    )
    for phase in result.phases.values():
        assert phase.requests == 300
        assert 150 < phase.achieved_rate < 210
        assert 0 < phase.latency.p50_ms <= phase.latency.p99_ms <= phase.latency.max_ms < 1000
    assert result.phases["redis_get"].latency.p50_ms < result.phases[result.baseline].latency.p50_ms
    assert result.phases["baseline_sync"].response_bytes > 1000  # the pre-serialized top-100
    assert out.exists() and (cfg.paths.reports / "bench_serve.json").exists()
    assert _bench_keys(redis_url) <= before


@pytest.mark.slow
def test_a_sharded_scratch_store_is_removed_from_every_shard(tmp_path: Path, redis_url: str) -> None:
    """With FUSIONREC_SERVING_SHARDS set, the scratch version is written across the shards: the clean-up must
    reach each of them, not only the configured Redis."""
    shard_urls = [redis_url.rsplit("/", 1)[0] + f"/{db}" for db in (11, 12)]
    clients = [redis.Redis.from_url(url) for url in shard_urls]
    before = [set(client.scan_iter(match="*")) for client in clients]
    cfg = RunConfig.from_env(home=tmp_path / "home", redis_url=redis_url, serving_shards=",".join(shard_urls))
    bench_serve(cfg, 100, 200.0, warmup=10, rounds=1, users=200, items=200, include_ours=False)
    for client, keys in zip(clients, before, strict=True):
        assert set(client.scan_iter(match="*")) <= keys, client
        client.close()
