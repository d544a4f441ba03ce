"""Train (resumable Optuna studies, budgets, pruning, plots), fuse (blend, RRF, stacking, selection) and
evaluate (every model and fusion, beyond-accuracy metrics, bootstrap CI) on a small synthetic shop."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fusionrec.config import RunConfig
from models.base import InteractionData
from models.popularity import Popularity
from pipelines.evaluate import evaluate
from pipelines.features import build_features
from pipelines.fuse import fuse_and_select, fusions_dir
from pipelines.split import split
from pipelines.stage import StageInputError
from pipelines.train import train
from pipelines.validate import validate
from tests.pipelines.test_pipeline_flow import synthetic_shop

pytestmark = pytest.mark.slow


class Drifting(Popularity):
    """Popularity blurred by noise of strength ``1 - quality``, fitted over 4 reported epochs: trials with a
    low quality fall behind at every epoch, which is what the median pruner stops."""

    name = "drifting"

    def __init__(self, quality: float = 1.0) -> None:
        super().__init__()
        self.params = {"quality": quality}
        self.quality = quality

    def fit(self, data: InteractionData) -> Drifting:
        super().fit(data)
        clean = self.item_scores_ / max(float(self.item_scores_.max()), 1.0)
        rng = np.random.default_rng(0)
        for epoch in range(4):
            self.item_scores_ = clean + (1 - self.quality) * 3 * rng.random(len(clean)).astype(np.float32)
            self.report_epoch(epoch)
        return self

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {"quality": trial.suggest_float("quality", 0.0, 1.0)}


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> RunConfig:
    import models.registry

    models.registry._MODELS["drifting"] = "tests.pipelines.test_zoo_flow:Drifting"
    home = tmp_path_factory.mktemp("zoo")
    synthetic_shop(home)
    config = RunConfig.from_env(
        home=home,
        models=("popularity", "ease", "itemknn", "drifting"),
        n_trials=2,
        model_trials={"drifting": 8},
        online_store="sqlite",
        serving_store="sqlite",
    )
    for stage in (validate, split, build_features, train, fuse_and_select, evaluate):
        stage(config)
    yield config
    del models.registry._MODELS["drifting"]


def _train_report(cfg: RunConfig) -> dict[str, Any]:
    from pipelines.stage import load_report

    return load_report(cfg.paths.reports, "train")


def test_budgets_and_pruning(cfg: RunConfig) -> None:
    report = _train_report(cfg)["models"]
    assert report["ease"]["trials"] == 2 and report["drifting"]["trials"] == 8
    assert report["drifting"]["pruned"] >= 1
    assert report["drifting"]["best_params"]["quality"] > 0.5
    for name in ("ease", "itemknn"):
        assert report[name]["train_seconds"] >= 0 and report[name]["peak_rss_mb"] > 50


def test_pruned_trials_and_plots_are_in_mlflow(cfg: RunConfig) -> None:
    import mlflow

    mlflow.set_tracking_uri(cfg.tracking_uri)
    runs = mlflow.search_runs(experiment_names=[cfg.experiment], output_format="pandas")
    assert (runs.get("tags.pruned") == "true").sum() == _train_report(cfg)["models"]["drifting"]["pruned"]
    ease_runs = runs[(runs["tags.stage"] == "train_model") & (runs["tags.model"] == "ease")]
    files = [f.path for f in mlflow.MlflowClient().list_artifacts(ease_runs.iloc[0]["run_id"], "optuna/ease")]
    assert set(files) == {"optuna/ease/ease_history.png", "optuna/ease/ease_importance.png"}


def test_a_repeated_run_resumes_its_studies(cfg: RunConfig) -> None:
    import optuna

    before = _train_report(cfg)["models"]
    more = dataclasses.replace(cfg, models=("ease",), n_trials=3)
    after = train(more).models["ease"]
    study = optuna.load_study(study_name=before["ease"]["study"], storage=cfg.optuna_url)
    assert after["study"] == before["ease"]["study"] and len(study.trials) == 3  # 2 earlier + 1 new
    again = train(more).models["ease"]
    assert len(optuna.load_study(study_name=after["study"], storage=cfg.optuna_url).trials) == 3
    assert again["best_params"] == after["best_params"]
    train(cfg)  # restore the module's train report for the tests below


def test_selection_compares_singles_and_every_fusion(cfg: RunConfig) -> None:
    from pipelines.stage import load_report

    selection = load_report(cfg.paths.reports, "select")
    assert set(selection["candidates"]) == {
        "popularity",
        "ease",
        "itemknn",
        "drifting",
        "blend",
        "rrf",
        "stacking",
    }
    singles = ["popularity", "ease", "itemknn", "drifting"]
    best_single = max(singles, key=lambda n: selection["candidates"][n]["ndcg@10"])
    assert selection["selected"] in {best_single, "blend", "rrf", "stacking"}
    assert "validation ndcg@10" in selection["reason"] and "95% CI" in selection["reason"]
    for fusion in ("blend", "rrf", "stacking"):
        assert (fusions_dir(cfg) / fusion / "recommender.json").exists()
        assert selection["fusions"][fusion]["train_seconds"] > 0
    assert set(selection["fusions"]["stacking"]["params"]) >= {"num_leaves", "n_estimators", "depth"}


def test_evaluation_covers_every_model_with_beyond_accuracy_metrics(cfg: RunConfig) -> None:
    from pipelines.stage import load_report

    result = load_report(cfg.paths.reports, "evaluate")
    assert set(result["test"]) == {
        "popularity",
        "ease",
        "itemknn",
        "drifting",
        "blend",
        "rrf",
        "stacking",
        "selected",
    }
    for metrics in result["test"].values():
        assert {"ndcg@10", "map@10", "hit@10", "mrr@10", "coverage", "novelty", "diversity"} <= set(metrics)
        assert 0 < metrics["coverage"] <= 1
    # popularity recommends nearly the same items to everyone: least coverage, least novelty
    assert result["test"]["popularity"]["coverage"] < result["test"]["ease"]["coverage"]
    selected = result["test"]["selected"]
    assert selected == result["test"][result["selected"]]
    ci = result["confidence_interval"]
    if ci is not None:
        assert ci["low"] <= ci["difference"] <= ci["high"]


def test_unknown_fusion_is_a_clear_error(cfg: RunConfig) -> None:
    with pytest.raises(StageInputError, match="unknown fusion"):
        fuse_and_select(dataclasses.replace(cfg, fusions=("median",)))


def test_fusions_can_be_switched_off(tmp_path: Path, cfg: RunConfig) -> None:
    from pipelines.stage import load_report

    result = fuse_and_select(dataclasses.replace(cfg, fusions=()))
    assert set(result.candidates) == {"popularity", "ease", "itemknn", "drifting"} and result.fusions == {}
    fuse_and_select(cfg)  # restore
    assert set(load_report(cfg.paths.reports, "select")["fusions"]) == {"blend", "rrf", "stacking"}


def test_a_run_does_not_leak_its_mlflow_store_into_the_environment(cfg: RunConfig) -> None:
    import os

    from pipelines.tracking import setup_mlflow

    setup_mlflow(cfg)
    assert "MLFLOW_TRACKING_URI" not in os.environ  # RunConfig would read it as the next run's store
    assert RunConfig.from_env(home=cfg.home / "other").tracking_uri != cfg.tracking_uri
