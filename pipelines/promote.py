"""Promote stage: the champion's recommendations for every known user (plus a popularity fallback) are written
to the serving store as a new version and switched to atomically; the previous version stays for rollback."""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import yaml

from fusionrec.config import RunConfig
from pipelines.bundle import Bundle
from pipelines.register import CHAMPION, alias_version
from pipelines.stage import StageInputError, StageResult
from pipelines.tracking import setup_mlflow

log = logging.getLogger(__name__)


class PromotionError(RuntimeError):
    pass


@dataclass
class PromoteResult(StageResult):
    model_name: str
    model_version: str
    serving_version: str
    previous_version: str | None
    users: int
    top_n: int
    store: str
    seconds: float


def load_bundle(cfg: RunConfig, ref: str) -> tuple[str, Bundle]:
    """Download a registered model version (``ref``: a version number, or an alias such as ``champion``)
    and load its bundle; returns (version, bundle). Raises ``StageInputError`` when ``ref`` is unknown."""
    import mlflow

    setup_mlflow(cfg)
    version = registered_version(cfg, ref)
    if version is None:
        raise StageInputError(
            f"model {cfg.registered_model!r} has no version or alias {ref!r} in the registry"
        )
    # The bundle is read into memory, so the download can go once it is loaded.
    with tempfile.TemporaryDirectory(prefix="fusionrec-model-") as tmp:
        local = Path(
            mlflow.artifacts.download_artifacts(f"models:/{cfg.registered_model}/{version}", dst_path=tmp)
        )
        # The pyfunc's MLmodel says where its "bundle" artifact was copied inside the model folder.
        pyfunc = yaml.safe_load((local / "MLmodel").read_text())["flavors"]["python_function"]
        return version, Bundle.load(local / pyfunc["artifacts"]["bundle"]["path"])


def registered_version(cfg: RunConfig, ref: str) -> str | None:
    """The version number ``ref`` names (``3``, ``v3``, ``champion``, ``@champion``), or None if unknown."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    ref = ref.strip()
    number = ref.removeprefix("v")
    if number.isdigit():
        try:
            return str(MlflowClient().get_model_version(cfg.registered_model, number).version)
        except MlflowException:
            return None
    found = alias_version(cfg, ref.removeprefix("@"))
    return None if found is None else str(found.version)


def load_champion_bundle(cfg: RunConfig) -> tuple[str, Bundle]:
    """Download the champion's artifacts from the registry and load its bundle."""
    setup_mlflow(cfg)
    if alias_version(cfg, CHAMPION) is None:
        raise PromotionError(
            f"model {cfg.registered_model!r} has no {CHAMPION}: approve a version first (fusionrec approve)"
        )
    return load_bundle(cfg, CHAMPION)


def promote(cfg: RunConfig) -> PromoteResult:
    from serving.context import anchored_candidates, build_context
    from serving.store import open_store

    start = time.perf_counter()
    model_version, bundle = load_champion_bundle(cfg)
    recommendations = bundle.recommend_known(cfg.top_n_serving)
    # Precompute what requests would otherwise redo: explanation anchors, catalogue, popular lists.
    context = build_context(bundle, cfg.paths.validated / "items.parquet", cfg.top_n_serving)
    anchored = anchored_candidates(bundle, recommendations)
    store = open_store(cfg)
    previous = store.live_version()
    # Microseconds in the name: two promotions of the same model version never collide.
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    serving_version = f"{cfg.registered_model}-v{model_version}-{stamp}"
    store.publish(
        serving_version,
        anchored,
        bundle.popular(cfg.top_n_serving),
        {"model_name": cfg.registered_model, "model_version": model_version, "run_id": cfg.run_id or ""},
        context=context,
    )
    store.close()
    seconds = time.perf_counter() - start
    log.info(
        "promoted %s v%s as %s (%d users) in %.1fs",
        cfg.registered_model,
        model_version,
        serving_version,
        len(recommendations),
        seconds,
    )
    result = PromoteResult(
        cfg.registered_model,
        model_version,
        serving_version,
        previous,
        len(recommendations),
        cfg.top_n_serving,
        cfg.serving_store,
        round(seconds, 3),
    )
    result.save(cfg.paths.reports, "promote")
    return result
