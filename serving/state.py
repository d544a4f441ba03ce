"""The API's in-process state: caches over the serving store, resilience, experiments, online feedback.

Everything a request needs is either one store read (a user's precomputed candidates) or in memory:
version contexts (loaded once per version), rules and experiment (re-read from the store at most once per
``SETTINGS_TTL``), and per-user exclusions and recent items (from feedback). When the store is unreachable
the state answers from the last context it saw (or the local fallback file) and marks the answer degraded;
a short circuit breaker stops every request from waiting on a dead Redis, and the next probe after the
breaker window reconnects by itself. With a sharded store there is one breaker per shard: a dead shard
degrades only its own users (and, for the coordinator, settings and contexts not yet cached).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict, defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

from fusionrec.config import RunConfig
from pipelines.privacy import pseudonym_key, pseudonymise_one
from serving.events import open_event_store
from serving.experiments import Arm, ExperimentError, ThompsonSampler, assign_arm, check_arms
from serving.metrics import ServingMetrics
from serving.rerank import ItemInfo, item_view
from serving.rules import CompiledRules, MerchRules, dump_rules, load_rules_file, rules_from_json
from serving.store import (
    Candidates,
    ServingStore,
    ServingStoreError,
    StoreUnavailableError,
    open_store,
)

log = logging.getLogger(__name__)

SETTINGS_TTL = 1.0  # seconds between re-reads of rules / experiment from the store
BREAKER_SECONDS = 1.0  # after a store failure, skip the store for this long
CONTEXTS_KEPT = 4
THOMPSON_REFRESH = 0.5  # seconds between re-estimates of Thompson weights (4000 posterior draws each)
RECENT_ITEMS = 5  # items a user clicked/carted lately (content neighbours for cold starts)
RULES, EXPERIMENT = "rules", "experiment"
DEFAULT_ARM = "champion"
ARM_MODES = ("model", "popular", "popular_global")


@dataclass
class VersionContext:
    version: str
    items: dict[str, list[Any]]  # item -> [title, category, brand, price]
    popular: list[list[Any]]
    popular_by_category: dict[str, list[list[Any]]]
    neighbours: dict[str, list[str]]
    popular_items: set[str] = field(default_factory=set)  # top of their category: "popular in Y" is true

    @classmethod
    def from_dict(cls, version: str, raw: dict[str, Any], fallback: list[list[Any]]) -> VersionContext:
        by_category = raw.get("popular_by_category", {})
        return cls(
            version=version,
            items=raw.get("items", {}),
            popular=raw.get("popular") or fallback,
            popular_by_category=by_category,
            neighbours=raw.get("neighbours", {}),
            popular_items={e[0] for ranked in by_category.values() for e in ranked[:20]},
        )


@dataclass
class ArmChoice:
    arm: str
    experiment: str | None
    version: str | None  # None: live
    popular: str | None  # None: the version's lists; "popular" / "popular_global": popularity for everyone


@dataclass
class Experiment:
    name: str
    policy: str  # "split" or "thompson"
    arms: list[dict[str, Any]]
    sampler: ThompsonSampler | None = None
    dirty: bool = True  # the sampler saw evidence since the weights were computed
    _weights: list[Arm] = field(default_factory=list)
    _computed_at: float = -1.0

    def weights(self) -> list[Arm]:
        """Fixed weights, or Thompson's (re-estimated at most every ``THOMPSON_REFRESH`` seconds)."""
        if self.sampler is None:
            if not self._weights:
                self._weights = [Arm(a["name"], float(a["weight"])) for a in self.arms]
            return self._weights
        now = time.monotonic()
        if not self._weights or (self.dirty and now - self._computed_at >= THOMPSON_REFRESH):
            self._weights, self._computed_at, self.dirty = self.sampler.weights(), now, False
        return self._weights


def parse_experiment(raw: dict[str, Any]) -> Experiment:
    """Check an experiment document (see the API's ``ExperimentIn``) and build it."""
    arms = raw.get("arms") or []
    weights = [Arm(str(a.get("name")), float(a.get("weight", 1.0))) for a in arms]
    check_arms(weights)
    for a in arms:
        if a.get("mode", "model") not in ARM_MODES:
            raise ExperimentError(f"arm {a.get('name')!r}: mode must be one of {', '.join(ARM_MODES)}")
    policy = raw.get("policy", "split")
    if policy not in ("split", "thompson"):
        raise ExperimentError(f"policy must be 'split' or 'thompson', got {policy!r}")
    sampler = ThompsonSampler([a.name for a in weights]) if policy == "thompson" else None
    return Experiment(str(raw.get("name") or "experiment"), policy, list(arms), sampler)


class ServingState:
    def __init__(self, cfg: RunConfig, store: ServingStore | None = None) -> None:
        self.cfg = cfg
        self.store = store or open_store(cfg, timeout=0.25)
        self.metrics = ServingMetrics()
        self.fallback_file = cfg.home / "serving-fallback.json"
        self._contexts: OrderedDict[str, VersionContext] = OrderedDict()
        self._last_context: VersionContext | None = None
        self._lock = threading.Lock()
        self._broken_until: dict[str, float] = {}  # breaker per part of the store (a shard, or the whole)
        self._last_failure: dict[str, str] = {}
        # A sharded store's user calls break per shard; other calls (and a one-node store's) under shard 0's key
        self._shard_for = getattr(self.store, "shard_for", None)
        self._coordinator = getattr(self.store, "shard_ids", ("store",))[0]
        self._settings_read_at = -1.0
        self._rules_raw: str | None = None
        self.rules: CompiledRules = MerchRules().compiled()
        self._experiment_raw: str | None = None
        self.experiment: Experiment | None = None
        self.exclusions: dict[str, set[str]] = defaultdict(set)  # user -> bought / dismissed items
        self.recent: dict[str, deque[str]] = {}  # user -> recently clicked / carted items
        self._events = None
        self._feature_store = None
        self._pseudonym_key: bytes | None = None
        self._view: dict[str, ItemInfo] = {}
        self._view_key: tuple[str, int] | None = None
        self._arm_counts: dict[str, list[int]] = {}  # arm -> [clicks, impressions] of the experiment

    def stored_id(self, user_id: str) -> str:
        """The id the user has in the data: the keyed pseudonym (key read once) or the raw id."""
        if not self.cfg.pseudonymise:
            return user_id
        if self._pseudonym_key is None:
            self._pseudonym_key = pseudonym_key()
        return pseudonymise_one(user_id, self._pseudonym_key)

    # ---- store access with a circuit breaker -----------------------------------------------------

    def _store_call(self, fn: Any, *args: Any, part: str | None = None) -> Any:
        part = part or self._coordinator
        if time.monotonic() < self._broken_until.get(part, 0.0):
            raise StoreUnavailableError(f"{self._last_failure[part]} (next try within {BREAKER_SECONDS:g} s)")
        try:
            return fn(*args)
        except StoreUnavailableError as exc:
            self._broken_until[part] = time.monotonic() + BREAKER_SECONDS
            self._last_failure[part] = str(exc)
            raise

    def candidates(self, user_id: str, version: str | None) -> Candidates:
        part = self._shard_for(user_id) if self._shard_for else None
        return self._store_call(self.store.candidates, user_id, version, part=part)

    def context(self, version: str) -> VersionContext:
        ctx = self._contexts.get(version)
        if ctx is not None:
            self.metrics.cache_hits.labels("context").inc()
            return ctx
        self.metrics.cache_misses.labels("context").inc()
        raw = self._store_call(self.store.context, version)
        fallback: list[list[Any]] = []
        # A version promoted before contexts existed: its popular list is what an unknown user gets.
        if not raw.get("popular"):
            fallback = json.loads(
                self._store_call(self.store.candidates, "\x00no-such-user", version).payload
            )
        ctx = VersionContext.from_dict(version, raw, fallback)
        with self._lock:
            self._contexts[version] = ctx
            while len(self._contexts) > CONTEXTS_KEPT:
                self._contexts.popitem(last=False)
        self._last_context = ctx
        self._save_fallback(ctx)
        return ctx

    def item_view(self, ctx: VersionContext) -> dict[str, ItemInfo]:
        """``rerank.item_view`` of this version under the current rules, rebuilt when either changes."""
        if self._view_key != (ctx.version, id(self.rules)):
            self._view = item_view(ctx.items, self.rules)
            self._view_key = (ctx.version, id(self.rules))
        return self._view

    def _save_fallback(self, ctx: VersionContext) -> None:
        """Keep the popular lists on local disk: answers survive a store that is down at start-up."""
        try:
            tmp = self.fallback_file.with_suffix(".tmp")
            document = {"version": ctx.version, "popular": ctx.popular, "items": ctx.items}
            tmp.write_text(json.dumps(document))
            tmp.replace(self.fallback_file)
        except OSError as exc:  # a read-only home must not break serving
            log.warning("could not write %s: %s", self.fallback_file, exc)

    def degraded_context(self) -> VersionContext | None:
        """The context to answer from while the store is down: the last one seen, else the local file."""
        if self._last_context is not None:
            return self._last_context
        if self.fallback_file.exists():
            raw = json.loads(self.fallback_file.read_text())
            self._last_context = VersionContext.from_dict(raw["version"], raw, raw["popular"])
        return self._last_context

    # ---- settings: rules and experiment ----------------------------------------------------------

    def refresh_settings(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._settings_read_at < SETTINGS_TTL:
            return
        self._settings_read_at = now
        try:
            rules_raw = self._store_call(self.store.get_setting, RULES)
            experiment_raw = self._store_call(self.store.get_setting, EXPERIMENT)
        except ServingStoreError:
            return  # keep what we have
        if rules_raw != self._rules_raw:
            self.rules = rules_from_json(rules_raw).compiled()
            self._rules_raw = rules_raw
        if experiment_raw != self._experiment_raw:
            self.experiment = parse_experiment(json.loads(experiment_raw)) if experiment_raw else None
            self._experiment_raw = experiment_raw
            self._arm_counts.clear()
            if self.experiment and self.experiment.sampler:
                self._seed_sampler(self.experiment)

    def put_rules(self, rules: MerchRules) -> None:
        self.store.put_setting(RULES, dump_rules(rules))
        self.refresh_settings(force=True)

    def load_rules_file(self) -> MerchRules:
        """Push the rules file (if any) to the store; returns the active rules."""
        rules = load_rules_file(self.cfg.paths.merch_rules)
        self.put_rules(rules)
        return rules

    def put_experiment(self, raw: dict[str, Any] | None) -> None:
        if raw is not None:
            parse_experiment(raw)  # raises ExperimentError before anything is stored
        self.store.put_setting(EXPERIMENT, json.dumps(raw) if raw else "")
        self.refresh_settings(force=True)

    def choose_arm(self, user_id: str) -> ArmChoice:
        experiment = self.experiment
        if experiment is None:
            return ArmChoice(DEFAULT_ARM, None, None, None)
        name = assign_arm(user_id, experiment.weights(), salt=experiment.name)
        arm = next(a for a in experiment.arms if a["name"] == name)
        version = arm.get("version") or "live"
        if version == "previous":
            version = self._store_call(self.store.previous_version)
        mode = arm.get("mode", "model")
        return ArmChoice(
            name, experiment.name, None if version == "live" else version, None if mode == "model" else mode
        )

    # ---- feedback ------------------------------------------------------------------------------------

    @property
    def events(self):  # -> EventStore, opened on first use
        if self._events is None:
            self._events = open_event_store(self.cfg)
        return self._events

    def load_feedback(self) -> None:
        """Exclusions and recent items from the stored feedback (start-up and reload)."""
        if not self.cfg.events_url and not self.cfg.paths.events_db.exists():
            return
        frame = self.events.frame()
        self.exclusions.clear()
        self.recent.clear()
        self.observe(frame.itertuples(index=False), count_metrics=False)

    def observe(self, events: Any, count_metrics: bool = True) -> None:
        """Update exclusions, recent items and the Thompson sampler with feedback events."""
        sampler = self.experiment.sampler if self.experiment else None
        for e in events:
            if e.event_type in ("purchase", "dismiss"):
                self.exclusions[e.user_id].add(e.item_id)
            elif e.event_type in ("click", "cart"):
                recent = self.recent.setdefault(e.user_id, deque(maxlen=RECENT_ITEMS))
                if e.item_id not in recent:
                    recent.appendleft(e.item_id)
            if sampler is not None and e.arm in sampler.trials and e.event_type in ("impression", "click"):
                counts = self._arm_counts.setdefault(e.arm, [0, 0])
                counts[e.event_type == "impression"] += 1
            if count_metrics:
                self.metrics.feedback.labels(e.event_type, e.arm or "").inc()
        if sampler is not None:
            # clicks can arrive before their impressions: the posterior uses min(clicks, impressions)
            for arm, (clicks, impressions) in self._arm_counts.items():
                sampler.successes[arm], sampler.trials[arm] = min(clicks, impressions), impressions
            self.experiment.dirty = True

    def _seed_sampler(self, experiment: Experiment) -> None:
        try:
            if not self.cfg.events_url and not self.cfg.paths.events_db.exists():
                return
            frame = self.events.frame()
        except Exception as exc:  # the experiment still runs, starting from the prior
            log.warning("could not read past feedback for Thompson sampling: %s", exc)
            return
        self._arm_counts.clear()
        self.observe(frame.itertuples(index=False), count_metrics=False)

    def favourite_categories(self, user_id: str) -> tuple[list[str], bool]:
        """The user's favourite categories from the Feast online store, and whether Feast was down."""
        if not (self.cfg.paths.features / "registry.db").exists():
            return [], False
        try:
            from pipelines.features import FAVOURITES, feature_store, online_user_features

            if self._feature_store is None:
                self._feature_store = feature_store(self.cfg)
            row = online_user_features(self.cfg, [user_id], store=self._feature_store)[user_id]
        except Exception as exc:  # Feast raises many kinds; the answer falls back to overall popularity
            self.metrics.fallbacks.labels("feature_store_unavailable").inc()
            log.warning("feature store unavailable for a cold start: %s", str(exc).splitlines()[0][:200])
            return [], True
        return [str(row[f]) for f in FAVOURITES if row.get(f)], False

    def reset_caches(self) -> None:
        with self._lock:
            self._contexts.clear()
        self._broken_until.clear()
        self.refresh_settings(force=True)

    def close(self) -> None:
        self.store.close()
        if self._events is not None:
            self._events.close()
