"""`fusionrec bench capacity`: the power-law fit and projection math on numbers worked out by hand, the stage
that breaks first on synthetic measurements, and a tiny real run through the CLI (table, JSON, plot)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from fusionrec.commands.capacity import capacity_tables, count, duration, megabytes
from pipelines.bench_capacity import (
    SPECS,
    STAGE_NAMES,
    SizeRun,
    StageRun,
    capacity_document,
    load_runs,
    project,
    reanalyse,
    stage_models,
)
from pipelines.capacity_model import (
    DRIVERS,
    LIMIT_MEMORY_MB,
    LIMIT_SECONDS,
    Scale,
    breaking_events,
    cost_model,
    fit_power_law,
)

# --- the fit -----------------------------------------------------------------------------------------------


def test_fit_recovers_an_exact_power_law() -> None:
    x = [2e5, 6e5, 2e6]
    law = fit_power_law(x, [2.5 * v**1.7 for v in x])
    assert law.a == pytest.approx(2.5, rel=1e-9)
    assert law.b == pytest.approx(1.7, abs=1e-12)
    assert law.r2 == pytest.approx(1.0)
    assert law(1e9) == pytest.approx(2.5 * 1e9**1.7, rel=1e-9)


def test_fit_is_least_squares_in_log_space() -> None:
    # log points (0, 0), (1, 2), (2, 3): slope 1.5, intercept 1/6, residuals -1/6, 1/3, -1/6 -> R² = 27/28
    e = math.e
    law = fit_power_law([1.0, e, e**2], [1.0, e**2, e**3])
    assert law.b == pytest.approx(1.5)
    assert law.a == pytest.approx(math.exp(1 / 6))
    assert law.r2 == pytest.approx(27 / 28)


def test_fit_rejects_what_cannot_give_an_exponent() -> None:
    with pytest.raises(ValueError, match="paired"):
        fit_power_law([1.0], [1.0])
    with pytest.raises(ValueError, match="distinct"):
        fit_power_law([5.0, 5.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="positive"):
        fit_power_law([0.0, 1.0], [1.0, 2.0])


def test_drivers() -> None:
    scale = Scale(events=1e9, users=1e8, items=1e7)
    assert DRIVERS["users*items"](scale) == 1e15
    assert DRIVERS["users+items"](scale) == 1.1e8
    assert DRIVERS["events^2/users"](scale) == 1e10  # 10 events per user: 100 co-occurrences each


# --- projection and limits ---------------------------------------------------------------------------------


def test_cost_model_projects_fitted_and_complexity_exponents_with_the_offset() -> None:
    scales = [Scale(2e5, 2e3, 1e3), Scale(6e5, 6e3, 3e3), Scale(2e6, 2e4, 1e4)]
    measured = [4e-6 * s.items**2 for s in scales]  # EASE-like memory: items^2
    model = cost_model("items", scales, measured, theory_b=3.0, offset=150.0)
    target = Scale(1e9, 1e8, 1e6)
    assert model.law.b == pytest.approx(2.0)
    assert model.fitted(target) == pytest.approx(150.0 + 4e-6 * 1e12)
    # complexity exponent anchored at the largest measurement: 400 MB at 1e4 items, x100 items -> x10^6
    assert model.theory(target) == pytest.approx(150.0 + 400.0 * 100**3)
    assert model.worst(target) == model.theory(target)


def test_breaking_point_along_the_target_path() -> None:
    path = Scale(1e9, 1e8, 1e7)  # 0.1 users and 0.01 items per event
    scales = [Scale(1e5, 1e3, 5e2), Scale(1e6, 1e4, 5e3)]
    linear = cost_model("events", scales, [1e-6 * s.events for s in scales], theory_b=1.0)
    assert breaking_events(linear, LIMIT_SECONDS, path) == pytest.approx(8.64e10)
    # 1e-3 * users^2 MB above a 100 MB offset hits 24 GB at users = sqrt(24476 / 1e-3) = 4947: 49.5k events
    square = cost_model("users", scales, [1e-3 * s.users**2 for s in scales], theory_b=2.0, offset=100.0)
    assert breaking_events(square, LIMIT_MEMORY_MB, path) == pytest.approx(4.95e4, rel=1e-3)
    assert breaking_events(square, 1.0, path) == 1e3  # already over at the smallest size looked at
    flat = cost_model("events", scales, [10.0, 10.0], theory_b=0.0)
    assert breaking_events(flat, LIMIT_SECONDS, path) is None


def _runs(costs: dict[str, tuple[float, float]], wall: float = 1.0) -> list[SizeRun]:
    """Synthetic measurements: stage -> (CPU seconds per driver unit, MB per driver unit), linear in the
    driver; wall time is ``wall`` x the CPU time (other work on the cores)."""
    runs = []
    for events in (2e5, 6e5, 2e6):
        scale = Scale(events, events / 100, events / 200)
        stages = {}
        for name in STAGE_NAMES:
            spec = SPECS[name]
            per_second, per_mb = costs.get(name, (1e-9, 1e-9))
            seconds = per_second * DRIVERS[spec.time[0]](scale)
            memory = per_mb * DRIVERS[spec.memory[0]](scale)
            stages[name] = StageRun(
                wall * seconds, seconds, 200.0 + memory, 200.0, 1.0, {"store_mb": events / 1e4}
            )
        runs.append(SizeRun(int(events), int(scale.users), int(scale.items), {}, 0.0, stages))
    return runs


def test_the_stage_that_breaks_first_is_the_one_whose_cost_crosses_a_limit_at_the_fewest_events() -> None:
    # score holds every user's top-N list: 0.01 MB a user -> 24 GB at ~2.4M users = 24M events (0.1 a user)
    runs = _runs({"score": (1e-12, 0.01), "ingest": (1e-4, 1e-6)}, wall=1000.0)
    models = stage_models(runs)
    assert models["score"]["memory"].law.b == pytest.approx(1.0)
    projection = project(models, Scale(1e9, 1e8, 1e7))
    first = projection["first_break"]["fitted"]
    assert (first["stage"], first["resource"]) == ("score", "memory")
    assert first["events"] == pytest.approx((LIMIT_MEMORY_MB - 200.0) / 0.01 * 10, rel=1e-3)
    assert projection["stages"]["score"]["over"] == ["24 GB"]
    # 1e-4 CPU s an event x 1B = 28 h: over the window; its wall time beside other work (x1000) is not judged
    assert projection["stages"]["ingest"]["cpu_seconds"] == pytest.approx(1e5)
    assert projection["stages"]["ingest"]["seconds"] == pytest.approx(1e8)
    assert projection["stages"]["ingest"]["over"] == ["24 h"]
    assert projection["stages"]["split"]["over"] == []
    assert projection["store"]["shards"] == math.ceil(1e6 / LIMIT_MEMORY_MB)  # 0.01 MB a user x 100M users


def test_measurements_reload_from_the_json_for_a_new_analysis(tmp_path: Path) -> None:
    runs = _runs({"train_ease": (1e-6, 1e-4)})
    document = capacity_document(runs, {"online_store": "redis", "serving_store": "redis"}, {})
    document |= {"wall_seconds": 5.0, "isolated": True}
    assert load_runs(json.loads(json.dumps(document))) == runs
    (tmp_path / "in.json").write_text(json.dumps(document))
    again = reanalyse(tmp_path / "in.json")
    assert again["fits"] == document["fits"] and again["projections"] == document["projections"]


def test_tables_render_every_stage_and_the_verdict() -> None:
    document = capacity_document(
        _runs({"train_ease": (1e-6, 1e-4)}), {"online_store": "sqlite", "serving_store": "sqlite"}, {
            "cpus": 2, "memory_gb": 24.0, "load_average": [1.0, 1.0, 1.0]
        }
    )  # fmt: skip
    document["wall_seconds"] = 1.0
    text = capacity_tables(document)
    for name in STAGE_NAMES:
        assert document["stages"][name] in text
    assert "breaks first" in text
    assert capacity_tables(document, markdown=True).count("|---|") >= 4
    assert (duration(90), duration(7200), duration(3 * 86400)) == ("90.0 s", "2.0 h", "3.0 d")
    assert (megabytes(512), megabytes(2048), count(2e6), count(1e9), count(6e5)) == (
        "512 MB", "2.0 GB", "2M", "1B", "600k"
    )  # fmt: skip


# --- a real, tiny run ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_tiny_run_writes_the_table_json_and_plot(tmp_path: Path) -> None:
    from fusionrec.cli import bench

    assert "capacity" in bench.commands
    from fusionrec.cli import cli

    out = tmp_path / "capacity.json"
    result = CliRunner().invoke(
        cli,
        ["--home", str(tmp_path / "home"), "bench", "capacity", "--sizes", "2000,4000,8000", "--in-process",
         "--json", str(out), "--plot", str(tmp_path / "capacity.png"), "--online-store", "sqlite",
         "--serving-store", "sqlite"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    document = json.loads(out.read_text())
    assert [s["generated"]["events"] for s in document["sizes"]] == [2000, 4000, 8000]
    assert [s["items"] for s in document["sizes"]] == [10, 20, 40]
    assert all(s["stages"]["publish"]["extra"]["users"] == s["users"] for s in document["sizes"])
    assert set(document["fits"]) == {*STAGE_NAMES, "store"}
    assert [p["users"] for p in document["projections"]] == [1e8, 1e8]
    assert "breaks first" in result.output and "validate (GX)" in result.output
    assert (tmp_path / "capacity.png").stat().st_size > 10_000


@pytest.mark.slow
def test_a_stage_is_measured_in_its_own_process(tmp_path: Path) -> None:
    from pipelines.bench_capacity import CapacityJob, run_in_child, size_shape
    from pipelines.generate import GenerateConfig, generate

    users, items = size_shape(2000)
    generate(GenerateConfig(users=users, items=items, events=2000, out=tmp_path / "shop"))
    ballast = b"x" * (1500 * 2**20)  # 1.5 GB resident here: ru_maxrss would carry it into the child
    run = run_in_child("ingest", CapacityJob(str(tmp_path), 2000, users, items), tmp_path / "log", 120.0)
    del ballast
    assert run.extra["rows"] == 2000
    assert run.seconds > 0 and run.cpu_seconds > 0
    assert 0 < run.base_rss_mb < run.peak_rss_mb < 1000  # the child's own peak (VmHWM), not this process's
