"""Open-loop load generator: requests at fixed arrival times, latency counted from the scheduled time.

Request ``i`` is due at ``start + i / rate`` whatever happened to the earlier ones, and its latency runs from
that due time to the last byte of its answer. A server that falls behind therefore shows its queueing in the
figures instead of silently slowing the client down (the "coordinated omission" of closed-loop tools).

The client is as thin as the thing it measures: asyncio protocols (callbacks, no tasks) over a pool of
keep-alive connections speaking HTTP/1.1 or Redis RESP. Each arrival is a loop timer that writes its request
on an idle connection right away (or queues it until one frees up, which then counts as latency). The loop
runs on ``select()`` with 1 µs timer slack: asyncio's default epoll loop rounds timeouts up to whole
milliseconds, which would send every request up to 1 ms late. The remaining dispatch lag (due time -> write)
is returned with the samples.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import pickle
import resource
import selectors
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

WireProtocol = Literal["http", "redis"]
MAX_ERROR_EXAMPLES = 5

# A parser looks at the bytes received so far on a connection: None while the answer is incomplete, else
# (bytes it used, error message or None, payload size).
Parsed = tuple[int, str | None, int] | None


@dataclass(frozen=True)
class LoadSpec:
    """One open-loop run: ``payloads[i]`` (wire-format request bytes) is sent at ``start + i / rate``; the
    first ``warmup`` are sent but not recorded."""

    protocol: WireProtocol
    host: str
    port: int
    payloads: Sequence[bytes]
    rate: float
    warmup: int = 0
    connections: int = 32
    drain_seconds: float = 30.0  # after the last arrival: how long stragglers may take before they are errors


@dataclass
class LoadSamples:
    """What one run measured (seconds). ``latencies`` (due time -> last byte) and ``lags`` (due time -> request
    written, the client's own delay plus any wait for a free connection) cover the recorded requests that
    succeeded, in arrival order."""

    latencies: list[float] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)
    requests: int = 0
    errors: int = 0
    warmup_errors: int = 0
    error_examples: list[str] = field(default_factory=list)
    seconds: float = 0.0  # first recorded due time -> last recorded answer
    client_cpu_seconds: float = 0.0
    max_in_flight: int = 0
    response_bytes: int = 0  # payload size of the last answer


def http_get(path: str, host: str = "127.0.0.1") -> bytes:
    """A keep-alive HTTP/1.1 GET request for ``path``."""
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()


def redis_get(key: str) -> bytes:
    """A RESP ``GET key`` command."""
    raw = key.encode()
    return b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(raw), raw)


def parse_http(buffer: bytes | bytearray) -> Parsed:
    """One HTTP/1.1 response with a Content-Length body; an error unless the status is 200."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buffer[:end]).lower()
    start = head.find(b"\r\ncontent-length:")
    if start < 0:
        # Not resynchronisable: drop everything received so far (the connection is then closed).
        return len(buffer), "response without Content-Length (chunked answers are not supported)", 0
    stop = head.find(b"\r\n", start + 2)
    length = int(head[start + 17 : stop if stop > 0 else len(head)])
    used = end + 4 + length
    if len(buffer) < used:
        return None
    status = bytes(buffer[9:12])
    if status != b"200":
        return used, f"HTTP {status.decode()}: {bytes(buffer[end + 4 : min(used, end + 124)])!r}", length
    return used, None, length


def parse_redis(buffer: bytes | bytearray) -> Parsed:
    """One RESP reply to GET; an error for nil or an error reply."""
    end = buffer.find(b"\r\n")
    if end < 0:
        return None
    if buffer[:1] != b"$":
        return end + 2, f"Redis reply {bytes(buffer[:end])!r}", 0
    length = int(buffer[1:end])
    if length < 0:
        return end + 2, "Redis GET returned nil (missing key)", 0
    used = end + 2 + length + 2
    return (used, None, length) if len(buffer) >= used else None


PARSERS: dict[str, Callable[[bytearray], Parsed]] = {"http": parse_http, "redis": parse_redis}


def run_load(spec: LoadSpec) -> LoadSamples:
    """Run ``spec`` to completion in this process (meant for a dedicated process) and return the samples."""
    if spec.rate <= 0 or spec.connections < 1 or not 0 <= spec.warmup < len(spec.payloads):
        raise ValueError("need rate > 0, connections >= 1 and fewer warm-up requests than payloads")
    _tight_timer_slack()
    loop = asyncio.SelectorEventLoop(selectors.SelectSelector())
    gc.collect()
    gc.disable()  # a collection pause in the client would show up as server latency
    before = resource.getrusage(resource.RUSAGE_SELF)
    try:
        samples = loop.run_until_complete(_OpenLoop(spec, loop).run())
    finally:
        gc.enable()
        loop.close()
    after = resource.getrusage(resource.RUSAGE_SELF)
    samples.client_cpu_seconds = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return samples


def run_load_in_subprocess(spec: LoadSpec, timeout: float | None = None) -> LoadSamples:
    """``run_load(spec)`` in a fresh Python process (``python -m pipelines.open_loop``), so the client has a
    process, an interpreter lock and a heap of its own."""
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.open_loop"],
        input=pickle.dumps(spec),
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed: {done.stderr.decode(errors='replace')[-2000:]}")
    return pickle.loads(done.stdout)


def _tight_timer_slack() -> None:
    """Linux wakes sleepers up to 50 µs late by default (timer slack); ask for 1 µs. Best effort."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).prctl(29, 1000, 0, 0, 0)  # PR_SET_TIMERSLACK, in nanoseconds


class _Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    def __init__(self, run: _OpenLoop) -> None:
        self.run = run
        self.parse = PARSERS[run.spec.protocol]
        self.buffer = bytearray()
        self.current: int | None = None  # index of the request in flight
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, i: int) -> None:
        self.current = i
        self.transport.write(self.run.spec.payloads[i])  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        if self.current is None:  # bytes nobody asked for: the connection cannot be trusted any more
            self.transport.close()  # type: ignore[union-attr]
            return
        self.buffer += data
        parsed = self.parse(self.buffer)
        if parsed is None:
            return
        used, error, size = parsed
        del self.buffer[:used]
        if error is not None:
            self.transport.close()  # type: ignore[union-attr]  # its state is unknown: replace it
        self.run.finished(self, error, size)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.current is not None:
            self.run.finished(self, f"connection lost: {exc or 'closed by the server'}", 0)
        self.run.lost(self)


class _OpenLoop:
    """The run's state: arrivals on timers, a FIFO of idle connections, a FIFO of requests waiting for one."""

    def __init__(self, spec: LoadSpec, loop: asyncio.AbstractEventLoop) -> None:
        self.spec, self.loop = spec, loop
        n = len(spec.payloads)
        self.latency = [float("nan")] * n
        self.lag = [0.0] * n
        self.done_at = [0.0] * n
        self.errors: list[str] = []
        self.idle: deque[_Connection] = deque()
        self.waiting: deque[int] = deque()
        self.pool: list[_Connection] = []  # every connection opened, to close them at the end
        self.in_flight = self.max_in_flight = self.answer_bytes = 0
        self.remaining = n
        self.start = 0.0
        self.over = False
        self.all_done = loop.create_future()

    def due(self, i: int) -> float:
        return self.start + i / self.spec.rate

    async def run(self) -> LoadSamples:
        for _ in range(self.spec.connections):
            self.pool.append(await self._connect())
        self.idle.extend(self.pool)
        self.start = self.loop.time() + 0.05
        self.loop.call_at(self.start, self.arrive, 0)
        last_due = self.due(len(self.spec.payloads) - 1)
        try:
            await asyncio.wait_for(
                asyncio.shield(self.all_done), timeout=last_due - self.loop.time() + self.spec.drain_seconds
            )
        except TimeoutError:
            self.errors.append(
                f"{self.remaining} requests unanswered {self.spec.drain_seconds:g}s after the last arrival"
            )
        self.over = True
        for conn in self.pool:
            conn.transport.close()  # type: ignore[union-attr]
        return self.samples()

    async def _connect(self) -> _Connection:
        _, conn = await self.loop.create_connection(lambda: _Connection(self), self.spec.host, self.spec.port)
        return conn  # type: ignore[return-value]

    def arrive(self, i: int) -> None:
        if i + 1 < len(self.spec.payloads):
            self.loop.call_at(self.due(i + 1), self.arrive, i + 1)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        if self.idle:
            self.send(self.idle.popleft(), i)
        else:
            self.waiting.append(i)

    def send(self, conn: _Connection, i: int) -> None:
        self.lag[i] = self.loop.time() - self.due(i)
        conn.send(i)

    def finished(self, conn: _Connection, error: str | None, size: int) -> None:
        i, conn.current = conn.current, None
        assert i is not None
        now = self.loop.time()
        if error is None:
            self.latency[i] = now - self.due(i)
            self.done_at[i] = now
            self.answer_bytes = size
        else:
            self.errors.append(f"request {i}: {error}")
        self.in_flight -= 1
        self.remaining -= 1
        if self.remaining == 0 and not self.all_done.done():
            self.all_done.set_result(None)
        if error is None:
            self.ready(conn)

    def ready(self, conn: _Connection) -> None:
        if self.waiting:
            self.send(conn, self.waiting.popleft())
        else:
            self.idle.append(conn)

    def lost(self, conn: _Connection) -> None:
        """A connection closed (by an error or the server): replace it, unless the run is over."""
        if conn in self.idle:
            self.idle.remove(conn)
        if not self.over:
            self.loop.create_task(self._replace())

    async def _replace(self) -> None:
        try:
            conn = await self._connect()
        except OSError as exc:
            self.errors.append(f"reconnect failed: {exc}")  # one connection fewer from now on
            return
        self.pool.append(conn)
        self.ready(conn)

    def samples(self) -> LoadSamples:
        recorded = range(self.spec.warmup, len(self.spec.payloads))
        ok = [i for i in recorded if self.latency[i] == self.latency[i]]  # not NaN: answered
        first_due = self.due(self.spec.warmup)
        return LoadSamples(
            latencies=[self.latency[i] for i in ok],
            lags=[self.lag[i] for i in ok],
            requests=len(recorded),
            errors=len(recorded) - len(ok),
            warmup_errors=sum(self.latency[i] != self.latency[i] for i in range(self.spec.warmup)),
            error_examples=self.errors[:MAX_ERROR_EXAMPLES],
            seconds=max((self.done_at[i] for i in ok), default=first_due) - first_due,
            max_in_flight=self.max_in_flight,
            response_bytes=self.answer_bytes,
        )


if __name__ == "__main__":  # the load-generator process: a pickled LoadSpec in, pickled LoadSamples out
    from pipelines import open_loop  # the importable module, so the pickles name it and not __main__

    sys.stdout.buffer.write(pickle.dumps(open_loop.run_load(pickle.loads(sys.stdin.buffer.read()))))
