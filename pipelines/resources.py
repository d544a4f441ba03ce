"""Wall time and peak memory of a block of code, for the cost columns of training reports and benchmarks.

Peak RSS is sampled by a background thread (psutil, every ~20 ms) rather than read from ``ru_maxrss``,
because ``ru_maxrss`` is the peak over the whole process lifetime, not over the block being measured.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psutil

SAMPLE_SECONDS = 0.02
_MB = 1024 * 1024


@dataclass
class Usage:
    """Filled in when the ``measure()`` block ends (zeros inside the block)."""

    seconds: float = 0.0  # wall time of the block
    peak_rss_mb: float = 0.0  # peak resident set size of this process during the block
    rss_delta_mb: float = 0.0  # peak minus the RSS at entry: what the block added at its worst
    start_rss_mb: float = 0.0


class _PeakSampler(threading.Thread):
    """Polls this process's RSS until stopped, keeping the maximum."""

    def __init__(self, process: psutil.Process, interval: float) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self._process = process
        self._interval = interval
        self._stop_event = threading.Event()
        self.peak = process.memory_info().rss

    def run(self) -> None:
        while not self._stop_event.wait(self._interval):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return max(self.peak, self._process.memory_info().rss)


@contextmanager
def measure(interval: float = SAMPLE_SECONDS) -> Iterator[Usage]:
    """``with measure() as usage: ...`` then read ``usage.seconds``, ``usage.peak_rss_mb``,
    ``usage.rss_delta_mb``. Also filled in when the block raises."""
    process = psutil.Process()
    usage = Usage(start_rss_mb=process.memory_info().rss / _MB)
    sampler = _PeakSampler(process, interval)
    start = time.perf_counter()
    sampler.start()
    try:
        yield usage
    finally:
        peak = sampler.stop()
        usage.seconds = time.perf_counter() - start
        usage.peak_rss_mb = peak / _MB
        usage.rss_delta_mb = usage.peak_rss_mb - usage.start_rss_mb
