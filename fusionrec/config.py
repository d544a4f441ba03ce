"""One configuration object per run.

Defaults run on one laptop (embedded SQLite everywhere, files under ``FUSIONREC_HOME``). A profile switches
the defaults as a whole: ``FUSIONREC_PROFILE=production`` (or ``profile: production`` in the YAML file named by
``FUSIONREC_CONFIG``) puts MLflow behind a tracking server, Optuna, feedback events and Feast's offline store
in PostgreSQL, and Feast's online store and the serving store in Redis (see ``profile_defaults``). Precedence:
defaults < profile < config file < ``FUSIONREC_*`` / ``MLFLOW_TRACKING_URI`` variables < explicit fields.
Every stage function takes a ``RunConfig`` and derives its input/output paths from ``RunConfig.paths``.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

DatasetName = Literal["ml-100k", "instacart"]
StoreKind = Literal["sqlite", "redis"]
OfflineStoreKind = Literal["file", "postgres", "spark"]
Profile = Literal["local", "production"]
PROFILES: tuple[str, ...] = ("local", "production")
ProtocolId = Literal["msr", "temporal", "next-basket"]

# Which evaluation protocol fits which bundled dataset (shared PROTOCOL.md); files default to "msr".
DEFAULT_PROTOCOL: dict[str, ProtocolId] = {"ml-100k": "msr", "instacart": "next-basket"}


@dataclass(frozen=True)
class SourceConfig:
    """Where the raw data comes from: a bundled dataset or user files with a column mapping."""

    dataset: str | None = "ml-100k"
    interactions: str | None = None
    items: str | None = None
    users: str | None = None
    reviews: str | None = None
    user_col: str = "user_id"
    item_col: str = "item_id"
    rating_col: str = "rating"
    timestamp_col: str = "timestamp"
    event_col: str = "event_type"
    session_col: str = "session_id"
    price_col: str = "price"
    quantity_col: str = "quantity"

    @property
    def name(self) -> str:
        """A short label for logs and MLflow tags."""
        if self.interactions:
            path = Path(self.interactions)
            return (
                path.parent.name if path.name == "events" and path.parent.name else path.stem
            )  # a shop folder
        return self.dataset or "unknown"


@dataclass(frozen=True)
class Paths:
    """The file layout of one FusionRec home; every stage reads and writes only here."""

    home: Path

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def canonical(self) -> Path:  # ingest output: interactions/items/users.parquet
        return self.data / "canonical"

    @property
    def validated(self) -> Path:  # validate output: the rows that passed
        return self.data / "validated"

    @property
    def quarantine(self) -> Path:  # validate output: rejected rows with reasons
        return self.data / "quarantine"

    @property
    def splits(self) -> Path:  # split output: fit/valid/train/test.parquet
        return self.data / "splits"

    @property
    def features(self) -> Path:  # Feast offline sources, registry and SQLite online store
        return self.home / "features"

    @property
    def gx(self) -> Path:  # GX validation results and data docs, one folder per run
        return self.home / "gx"

    @property
    def artifacts(self) -> Path:  # trained models, blend, metrics json
        return self.home / "artifacts"

    @property
    def mlflow_db(self) -> Path:
        return self.home / "mlflow.db"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.home / "mlartifacts"

    @property
    def serving_db(self) -> Path:
        return self.home / "serving.db"

    @property
    def events_db(self) -> Path:  # feedback events from the API (SQLite default; PostgreSQL via events_url)
        return self.home / "events.db"

    @property
    def merch_rules(self) -> Path:  # merchandising rules the shop edits without a retrain
        return self.home / "merch_rules.yaml"

    @property
    def dvc_remote(self) -> Path:
        return self.home / "dvc-remote"

    @property
    def optuna_db(self) -> Path:  # Optuna studies (resumable), unless a storage URL is configured
        return self.home / "optuna.db"

    @property
    def reports(self) -> Path:  # stage results as JSON, read by `fusionrec status`
        return self.home / "reports"


def _env_home() -> Path:
    return Path(os.environ.get("FUSIONREC_HOME", ".fusionrec")).expanduser().resolve()


class ConfigError(ValueError):
    """A configuration file or profile that can't be used (one line: what and where)."""


# Environment variables that switch a run to production services, and the RunConfig field each sets.
ENV_SWITCHES = {
    "FUSIONREC_PROFILE": "profile",
    "FUSIONREC_OFFLINE_STORE": "offline_store",
    "FUSIONREC_OFFLINE_STORE_URL": "offline_store_url",
    "FUSIONREC_ONLINE_STORE": "online_store",
    "FUSIONREC_SERVING_STORE": "serving_store",
    "FUSIONREC_SERVING_SHARDS": "serving_shards",
    "FUSIONREC_REDIS_URL": "redis_url",
    "FUSIONREC_EVENTS_URL": "events_url",
    "MLFLOW_TRACKING_URI": "mlflow_tracking_uri",
    "FUSIONREC_OPTUNA_STORAGE": "optuna_storage",
    "FUSIONREC_PSEUDONYMISE": "pseudonymise",  # "false" keeps raw user ids (data that is already pseudonymous)
}

# The default model zoo of a retrain: strong, quick CF models and the Feast-fed two-tower (see docs/models.md).
DEFAULT_MODELS = ("ease", "itemknn", "ials", "two_tower")
FUSION_METHODS = ("blend", "rrf", "stacking")


@dataclass(frozen=True)
class RunConfig:
    """Everything one retrain run needs. Build with ``RunConfig.from_env(**overrides)``."""

    home: Path = field(default_factory=_env_home)
    source: SourceConfig = field(default_factory=SourceConfig)
    protocol: ProtocolId | None = None  # None: the dataset's default protocol
    models: tuple[str, ...] = DEFAULT_MODELS
    fusions: tuple[str, ...] = FUSION_METHODS  # fusion methods compared with the single models
    fusion_needs_significance: bool = True  # a fusion is selected only if its validation gain's CI is above 0
    n_trials: int = 4  # Optuna trials per model (default budget)
    model_trials: dict[str, int] = field(default_factory=dict)  # per-model trial budgets
    model_seconds: dict[str, float] = field(default_factory=dict)  # per-model time budgets (tuning)
    optuna_storage: str | None = None  # None: SQLite file in home
    k: int = 10
    seed: int = 42
    max_reject_share: float = 0.05  # validation fails above this share of rejected rows
    drift_action: Literal["warn", "fail", "off"] = "warn"  # what a drift above the threshold does
    drift_threshold: float = 0.2  # population stability index above which a distribution has drifted
    pseudonymise: bool = True  # user ids -> keyed hash at ingestion (key: FUSIONREC_PSEUDONYM_KEY)
    keep_personal_data: bool = False  # keep e-mail/phone/name/address columns (dropped by default)
    auto_approve: bool = False
    top_n_serving: int = 100  # recommendations precomputed per user in the serving store
    registered_model: str = "fusionrec"
    online_store: StoreKind = "sqlite"  # Feast online store
    serving_store: StoreKind = "sqlite"
    redis_url: str = "redis://127.0.0.1:6379/0"
    serving_shards: str | None = None  # comma-separated Redis URLs: a sharded serving store (docs/scale-out)
    events_url: str | None = None  # PostgreSQL URL for feedback events; None: SQLite file in home
    use_feedback: bool = True  # the next ingest appends the API's click/cart/purchase feedback events
    approval_tolerance: float = 0.01  # a challenger this much worse (nDCG) than the champion is refused
    mlflow_tracking_uri: str | None = None  # None: SQLite file in home
    offline_store: OfflineStoreKind = "file"  # Feast offline store: Parquet files, PostgreSQL or Spark
    offline_store_url: str | None = None  # PostgreSQL URL of the offline store (offline_store="postgres")
    profile: Profile = "local"  # the defaults it started from (see profile_defaults)
    experiment: str = "fusionrec"
    run_id: str | None = None  # orchestrator run id (Airflow run_id), tagged on MLflow runs

    @property
    def paths(self) -> Paths:
        return Paths(self.home)

    @property
    def effective_protocol(self) -> ProtocolId:
        if self.protocol:
            return self.protocol
        if self.source.interactions:
            return "msr"
        return DEFAULT_PROTOCOL.get(self.source.dataset or "", "msr")

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.paths.mlflow_db}"

    @property
    def optuna_url(self) -> str:
        return self.optuna_storage or f"sqlite:///{self.paths.optuna_db}"

    @classmethod
    def from_env(cls, **overrides: Any) -> RunConfig:
        """Defaults, then the profile's, then the ``FUSIONREC_CONFIG`` file, then environment variables, then
        explicit overrides (None values ignored)."""
        variables: dict[str, Any] = {
            field: os.environ[var] for var, field in ENV_SWITCHES.items() if os.environ.get(var)
        }
        if isinstance(variables.get("pseudonymise"), str):
            variables["pseudonymise"] = variables["pseudonymise"].strip().lower() not in {
                "0", "false", "no", "off",
            }  # fmt: skip
        explicit = {k: v for k, v in overrides.items() if v is not None}
        from_file = config_file_values(os.environ.get("FUSIONREC_CONFIG"))
        profile = explicit.get("profile") or variables.get("profile") or from_file.get("profile") or "local"
        env = profile_defaults(profile) | from_file | variables | explicit
        env["profile"] = profile
        if "home" in env:
            env["home"] = Path(env["home"]).expanduser().resolve()
        for name in ("models", "fusions"):
            if name in env:
                env[name] = tuple(env[name])
        if isinstance(env.get("source"), dict):
            env["source"] = SourceConfig(**env["source"])
        return cls(**env)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (for Airflow XCom / params and MLflow params)."""
        d = dataclasses.asdict(self)
        d["home"] = str(self.home)
        d["models"] = list(self.models)
        d["fusions"] = list(self.fusions)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        return cls.from_env(**d)


def postgres_database_url(base: str, database: str, driver: str = "postgresql") -> str:
    """``postgresql://user@host:port`` (any database part replaced) -> the URL of ``database``."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(base)
    return urlunsplit((driver, parts.netloc, f"/{database}", parts.query, ""))


def profile_defaults(profile: str) -> dict[str, Any]:
    """The field defaults a profile changes. ``production``: servers named by ``FUSIONREC_POSTGRES_URL``
    (default postgresql://postgres@127.0.0.1:5432; databases fusionrec_events, fusionrec_optuna,
    fusionrec_features), ``FUSIONREC_REDIS_URL`` and ``MLFLOW_TRACKING_URI`` (default http://127.0.0.1:5000,
    an MLflow tracking server backed by PostgreSQL)."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    if profile == "local":
        return {}
    postgres = os.environ.get("FUSIONREC_POSTGRES_URL") or "postgresql://postgres@127.0.0.1:5432"
    return {
        "online_store": "redis",
        "serving_store": "redis",
        "offline_store": "postgres",
        "offline_store_url": postgres_database_url(postgres, "fusionrec_features"),
        "events_url": postgres_database_url(postgres, "fusionrec_events"),
        "optuna_storage": postgres_database_url(postgres, "fusionrec_optuna", "postgresql+psycopg2"),
        "mlflow_tracking_uri": "http://127.0.0.1:5000",
    }


def config_file_values(path: str | None) -> dict[str, Any]:
    """The RunConfig fields set in a YAML file (``FUSIONREC_CONFIG``); unknown keys are an error."""
    if not path:
        return {}
    import yaml

    file = Path(path).expanduser()
    try:
        values = yaml.safe_load(file.read_text()) or {}
    except OSError as error:
        raise ConfigError(f"{file}: can't read the config file ({error.strerror})") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"{file}: not valid YAML ({str(error).splitlines()[0]})") from error
    if not isinstance(values, dict):
        raise ConfigError(f"{file}: expected a mapping of settings, got {type(values).__name__}")
    known = {f.name for f in dataclasses.fields(RunConfig)}
    if unknown := sorted(set(values) - known):
        raise ConfigError(
            f"{file}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    return values
