"""measure(): wall time and peak RSS of a block."""

from __future__ import annotations

import time

import numpy as np
import pytest

from pipelines.resources import measure

MB = 1024 * 1024


def test_peak_rss_sees_a_temporary_allocation() -> None:
    with measure() as usage:
        block = np.ones(200 * MB // 8)  # 200 MB, every page touched
        time.sleep(0.1)  # several sampler ticks while it is alive
        del block  # freed before the block ends: only the sampler can see it
    assert 170 < usage.rss_delta_mb < 260
    assert usage.peak_rss_mb == pytest.approx(usage.start_rss_mb + usage.rss_delta_mb)
    assert 0.1 <= usage.seconds < 5


def test_wall_time_and_quiet_block() -> None:
    with measure() as usage:
        assert usage.seconds == 0.0  # filled in only at the end
        time.sleep(0.2)
    assert 0.2 <= usage.seconds < 2
    assert usage.peak_rss_mb > 0
    assert 0 <= usage.rss_delta_mb < 50  # nothing allocated


def test_filled_in_when_the_block_raises() -> None:
    with pytest.raises(RuntimeError), measure() as usage:
        time.sleep(0.05)
        raise RuntimeError("boom")
    assert usage.seconds >= 0.05 and usage.peak_rss_mb > 0
