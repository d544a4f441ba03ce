"""Compare stage: the challenger and the current champion scored on the same holdout, before anyone approves.

Both are registered model versions; their bundles are downloaded from the registry and scored on this run's
test split with the evaluate stage's metric code. A champion trained on older data may not know some of the
test users (they get its popularity fallback, as in serving) or items (it cannot recommend them); items it
knows that left the catalogue are skipped. The verdict on the primary metric (nDCG@k) decides whether an
approval needs ``--force``; the result is saved as a report and as the ``comparison`` tag of the challenger.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from fusionrec.config import RunConfig
from models.base import Recommender
from pipelines.bundle import Bundle
from pipelines.metrics import METRICS, at_k
from pipelines.register import CHALLENGER, CHAMPION, alias_version
from pipelines.stage import StageInputError, StageResult
from pipelines.tracking import setup_mlflow

log = logging.getLogger(__name__)

COMPARISON_TAG = "comparison"
NO_CHAMPION, BETTER, WITHIN_TOLERANCE, WORSE = "no_champion", "better", "within_tolerance", "worse"


@dataclass
class CompareResult(StageResult):
    model_name: str
    challenger_version: str
    champion_version: str | None
    metric: str  # the primary metric the verdict is about, e.g. "ndcg@10"
    tolerance: float
    verdict: str  # no_champion | better | within_tolerance | worse
    challenger: dict[str, float]  # test metrics on the holdout
    champion: dict[str, float] | None  # the metrics both have (None without a champion)
    difference: dict[str, float] | None  # challenger - champion, per metric
    test_users: int
    champion_cold_users: int  # test users the champion does not know (scored with its popularity fallback)
    holdout: str  # the test split both were scored on


def judge(challenger: float, champion: float | None, tolerance: float) -> str:
    """The verdict on the primary metric: worse means more than ``tolerance`` below the champion."""
    if champion is None:
        return NO_CHAMPION
    if challenger > champion:
        return BETTER
    return WITHIN_TOLERANCE if challenger >= champion - tolerance else WORSE


class RegisteredOnHoldout(Recommender):
    """A registered bundle seen through the holdout's id index: it scores the holdout's items for the
    holdout's users, so the evaluate stage's metric code (masks and relevance in that index) applies as is.
    Users the bundle does not know get its popularity scores; items it does not know score -inf and are
    never recommended."""

    name = "registered_on_holdout"

    def __init__(self, bundle: Bundle, user_ids: np.ndarray, item_ids: np.ndarray) -> None:
        super().__init__()
        self.bundle = bundle
        self.user_pos = pd.Index(bundle.user_ids.astype(str)).get_indexer(np.asarray(user_ids).astype(str))
        self.item_pos = pd.Index(bundle.item_ids.astype(str)).get_indexer(np.asarray(item_ids).astype(str))

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        positions = self.user_pos[np.asarray(user_idx)]
        known = positions >= 0
        own = np.empty((len(positions), len(self.bundle.item_ids)))
        own[~known] = self.bundle.popularity
        if known.any():
            own[known] = self.bundle.model.score(positions[known])
        scores = np.full((len(positions), len(self.item_pos)), -np.inf)
        mapped = self.item_pos >= 0
        scores[:, mapped] = own[:, self.item_pos[mapped]]
        return scores

    def recommend(
        self, user_idx: np.ndarray, k: int, exclude: sp.csr_matrix | None = None, batch_size: int = 1024
    ) -> tuple[np.ndarray, np.ndarray]:
        items, scores = super().recommend(user_idx, k, exclude, batch_size)
        # When the bundle knows fewer than k unmasked items, top-k pads with -inf items it never scored.
        unknown = (items >= 0) & (self.item_pos[np.maximum(items, 0)] < 0)
        items[unknown], scores[unknown] = -1, -np.inf
        return items, scores

    def cold_users(self, user_idx: np.ndarray) -> int:
        return int((self.user_pos[np.asarray(user_idx)] < 0).sum())


def compare(cfg: RunConfig, version: str | None = None) -> CompareResult:
    """Score ``version`` (default: the challenger) and the champion on this run's test split; tag the
    result on ``version`` as ``comparison`` (JSON) and save it as the ``compare`` report."""
    from mlflow import MlflowClient

    from pipelines.evaluate import test_metrics
    from pipelines.promote import load_bundle
    from pipelines.splitdata import load_split_data

    if not (cfg.paths.splits / "test.parquet").exists():
        raise StageInputError(f"no test split in {cfg.paths.splits}: run the split stage first")
    setup_mlflow(cfg)
    challenger_version, challenger = load_bundle(cfg, version or CHALLENGER)
    champion_mv = alias_version(cfg, CHAMPION)
    data = load_split_data(cfg, with_features=False)
    popularity = np.asarray((data.train.matrix > 0).sum(axis=0)).ravel()

    def on_holdout(bundle: Bundle) -> tuple[dict[str, float], int]:
        model = RegisteredOnHoldout(bundle, data.train.user_ids, data.train.item_ids)
        cold = model.cold_users(data.test.user_idx)
        if not (model.item_pos >= 0).any():  # it knows none of the holdout's items: no list, no hit
            return at_k(dict.fromkeys(METRICS, 0.0), cfg.k) | {"coverage": 0.0}, cold
        metrics, _ = test_metrics(model, data.test, data, popularity, cfg.k)
        # nan (novelty of empty lists) is no number to compare, nor valid JSON for tags and XCom
        return {name: value for name, value in metrics.items() if np.isfinite(value)}, cold

    ours, _ = on_holdout(challenger)
    metric = f"ndcg@{cfg.k}"
    champion_version, theirs, difference, cold = None, None, None, 0
    if champion_mv is not None:
        champion_version, champion = load_bundle(cfg, str(champion_mv.version))
        scored, cold = on_holdout(champion)
        theirs = {name: value for name, value in scored.items() if name in ours}
        difference = {name: ours[name] - value for name, value in theirs.items()}
    result = CompareResult(
        model_name=cfg.registered_model,
        challenger_version=challenger_version,
        champion_version=champion_version,
        metric=metric,
        tolerance=cfg.approval_tolerance,
        verdict=judge(ours[metric], None if theirs is None else theirs[metric], cfg.approval_tolerance),
        challenger=ours,
        champion=theirs,
        difference=difference,
        test_users=data.test.n_users,
        champion_cold_users=cold,
        holdout=str(cfg.paths.splits / "test.parquet"),
    )
    MlflowClient().set_model_version_tag(
        cfg.registered_model, challenger_version, COMPARISON_TAG, json.dumps(result.to_dict())
    )
    log.info("compare: %s", summary(result.to_dict()))
    result.save(cfg.paths.reports, "compare")
    return result


def summary(comparison: dict) -> str:
    """One line: the verdict with both values of the primary metric and the tolerance."""
    metric = comparison["metric"]
    ours = comparison["challenger"][metric]
    if comparison.get("champion") is None:
        return f"v{comparison['challenger_version']} {metric} {ours:.4f}, no champion to compare with"
    theirs = comparison["champion"][metric]
    return (
        f"v{comparison['challenger_version']} {metric} {ours:.4f} vs champion "
        f"v{comparison['champion_version']} {theirs:.4f} (difference {ours - theirs:+.4f}, "
        f"tolerance {comparison['tolerance']}): {comparison['verdict']}"
    )
