"""Benchmark: the retrain pipeline's own stages (ingest → validate → split → features → train → fuse → evaluate)
on a dataset or any interactions file, in a scratch home, reported as one JSON document.

What the benchmark shows is what a retrain promotes: the same model zoo, tuning, fusion and selection code;
it only skips versioning, registration and promotion. Test metrics are computed once, by the evaluate stage.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from fusionrec.config import RunConfig
from pipelines.resources import measure

log = logging.getLogger(__name__)

SCALE_OUT_ONLY = ("spark_als",)
RESULT_KEYS = ("ndcg", "precision", "recall", "map", "hit", "mrr")


def bench_models() -> tuple[str, ...]:
    """The whole zoo of single models: every registered model that is not a fusion, except the Spark port of
    ALS (a scale-out engine, measured against iALS in docs/scale-out/training.md; ask for it with --models)."""
    from models.registry import base_models

    return tuple(name for name in base_models() if name not in SCALE_OUT_ONLY)


def run_stages(cfg: RunConfig) -> dict[str, dict[str, Any]]:
    """The benchmark's stages in order; each stage's result as a dict."""
    from pipelines.evaluate import evaluate
    from pipelines.features import build_features
    from pipelines.fuse import fuse_and_select
    from pipelines.ingest import ingest
    from pipelines.split import split
    from pipelines.train import train
    from pipelines.validate import validate

    results: dict[str, dict[str, Any]] = {}
    for name, stage in (
        ("ingest", ingest),
        ("validate", validate),
        ("split", split),
        ("features", build_features),
        ("train", train),
        ("fuse", fuse_and_select),
        ("evaluate", evaluate),
    ):
        start = time.perf_counter()
        log.info("bench: stage %s", name)
        results[name] = stage(cfg).to_dict()
        log.info("bench: stage %s done in %.1fs", name, time.perf_counter() - start)
    return results


def benchmark_document(cfg: RunConfig, stages: dict[str, dict[str, Any]], seconds: float) -> dict[str, Any]:
    """The benchmark JSON: one entry per single model and per fusion, test metrics plus cost."""
    evaluation, trained, selection = stages["evaluate"], stages["train"]["models"], stages["fuse"]
    k = evaluation["k"]
    results = []
    for name, metrics in evaluation["test"].items():
        if name == "selected":
            continue
        single = name in trained
        cost = trained[name] if single else selection["fusions"][name]
        entry = {"model": name, "kind": "single" if single else "fusion"}
        entry |= {f"{m}@{k}": metrics[f"{m}@{k}"] for m in RESULT_KEYS}
        entry |= {m: metrics[m] for m in ("coverage", "diversity", "novelty") if m in metrics}
        entry |= {
            "train_seconds": cost["train_seconds"],
            "peak_rss_mb": cost["peak_rss_mb"],
            f"valid_ndcg@{k}": selection["candidates"][name][f"ndcg@{k}"],
        }
        if single:
            entry |= {
                "tuning_seconds": cost["tuning_seconds"],
                "trials": cost["trials"],
                "pruned": cost["pruned"],
            }
        results.append(entry)
    results.sort(key=lambda r: -r[f"ndcg@{k}"])
    return {
        "dataset": cfg.source.name,
        "protocol": evaluation["protocol"],
        "k": k,
        "results": results,
        "selected": evaluation["selected"],
        "selection_reason": selection["reason"],
        "confidence_interval": evaluation["confidence_interval"],
        "test_users": evaluation["test_users"],
        "split_rows": stages["split"]["rows"],
        "n_trials": cfg.n_trials,
        "seconds": round(seconds, 1),
    }


def bench(cfg: RunConfig, out: Path | None = None, keep: bool = False) -> dict[str, Any]:
    """Run the benchmark in ``cfg.home`` (wiped first unless ``keep``: Optuna studies then resume) and write
    the JSON document to ``out`` when given."""
    if cfg.home.exists() and not keep:
        shutil.rmtree(cfg.home)
    cfg.home.mkdir(parents=True, exist_ok=True)
    with measure() as usage:
        stages = run_stages(cfg)
    document = benchmark_document(cfg, stages, usage.seconds)
    document["peak_rss_mb"] = round(usage.peak_rss_mb, 1)
    document["config"] = {
        k: v for k, v in dataclasses.asdict(cfg).items() if k in ("models", "fusions", "seed")
    }
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(document, indent=2) + "\n")
        log.info("bench: wrote %s", out)
    return document
