"""A synthetic shop: users, a catalogue, events and reviews, plus the ground-truth tastes behind them.

`generate(cfg)` writes, under ``cfg.out``:

- ``events/part-00000.parquet, ...``: view/click/cart/purchase events in the canonical schema
  (pipelines/schema.py), one part per block of users, each sorted by timestamp;
- ``items.parquet``, ``users.parquet`` (PII columns with ``with_pii``), ``reviews.parquet``;
- ``truth/``: every user's and item's latent parameters (``load_truth`` reads them back as a `ShopTruth`
  whose ``utility`` / ``purchase_probability`` let a shopper simulator judge recommendations);
- ``manifest.json``: counts, seed, parameters, timing.

How the shop behaves: each user has a Dirichlet taste over top categories, a few favourite brands, a price
sensitivity and a latent "style" vector; each item a quality, a latent vector and a long-tail popularity.
Users shop in sessions (start times follow local hour-of-day and day-of-week rhythms, never before signup);
a session browses mostly one category, each view picks the most appealing of a few popular candidates that
already exist, and views turn into clicks, carts and purchases with probabilities rising with the user's
utility (discounts help price-sensitive users). Users re-buy consumables, a few staples above all, and buy a
durable item once; some buyers review it, rating by their utility. Everything is vectorised with numpy and
written with pyarrow by blocks of users, so memory stays bounded whatever the event count; the same config
(chunk size included) gives the same files.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.schema import CATEGORY_SEPARATOR, MIN_TIMESTAMP

GENERATOR = "fusionrec-synthetic-shop/1"
DEFAULT_END = "2026-07-01"  # exclusive: by default the period ends with 2026-06-30 (UTC)
EVENT_NAMES = ("view", "click", "cart", "purchase")  # funnel stages, in order

SECOND = 1_000_000_000  # ns
HOUR = 3600 * SECOND
DAY = 24 * HOUR
SESSION_SPAN = 2 * HOUR  # every event of a session lies within this of its start
HISTORY_DAYS = 730  # users and items that predate the period arrived within this many days before it

# top category: (typical price, consumable?, {sub-category: leaf categories})
TAXONOMY: dict[str, tuple[float, bool, dict[str, tuple[str, ...]]]] = {
    "Electronics": (120.0, False, {
        "Audio": ("Headphones", "Speakers", "Earbuds"),
        "Computers": ("Laptops", "Monitors", "Keyboards"),
        "Phones": ("Smartphones", "Chargers", "Phone Cases"),
    }),
    "Home & Kitchen": (45.0, False, {
        "Cookware": ("Frying Pans", "Saucepans", "Knife Sets"),
        "Appliances": ("Blenders", "Coffee Makers", "Toasters"),
        "Decor": ("Lamps", "Cushions", "Wall Clocks"),
    }),
    "Fashion": (40.0, False, {
        "Shoes": ("Sneakers", "Boots", "Sandals"),
        "Clothing": ("T-Shirts", "Jeans", "Jackets"),
        "Accessories": ("Backpacks", "Watches", "Sunglasses"),
    }),
    "Beauty": (18.0, True, {
        "Skincare": ("Moisturizers", "Cleansers", "Sunscreens"),
        "Hair Care": ("Shampoos", "Conditioners", "Hair Oils"),
        "Makeup": ("Lipsticks", "Mascaras", "Foundations"),
    }),
    "Grocery": (6.0, True, {
        "Beverages": ("Coffee Beans", "Green Tea", "Sparkling Water"),
        "Snacks": ("Granola Bars", "Dark Chocolate", "Potato Chips"),
        "Pantry": ("Olive Oil", "Pasta", "Basmati Rice"),
    }),
    "Sports & Outdoors": (55.0, False, {
        "Fitness": ("Yoga Mats", "Dumbbells", "Resistance Bands"),
        "Camping": ("Tents", "Sleeping Bags", "Headlamps"),
        "Cycling": ("Bike Helmets", "Bike Lights", "Water Bottles"),
    }),
    "Toys & Games": (25.0, False, {
        "Building": ("Building Blocks", "Model Kits", "Magnetic Tiles"),
        "Games": ("Board Games", "Card Games", "Jigsaw Puzzles"),
        "Outdoor Play": ("Kites", "Water Guns", "Kick Scooters"),
    }),
    "Books": (15.0, False, {
        "Fiction": ("Thrillers", "Fantasy Novels", "Romance Novels"),
        "Non-Fiction": ("Biographies", "Cookbooks", "History Books"),
        "Children": ("Picture Books", "Activity Books", "Early Readers"),
    }),
    "Pet Supplies": (20.0, True, {
        "Dog": ("Dog Food", "Dog Treats", "Dog Toys"),
        "Cat": ("Cat Food", "Cat Litter", "Scratching Posts"),
        "Aquarium": ("Fish Food", "Aquarium Filters", "Water Conditioners"),
    }),
    "Health": (14.0, True, {
        "Vitamins": ("Multivitamins", "Vitamin D", "Omega-3 Capsules"),
        "Personal Care": ("Toothpaste", "Electric Toothbrushes", "Deodorants"),
        "First Aid": ("Bandages", "Thermometers", "Pain Relief Gels"),
    }),
}  # fmt: skip
CATEGORIES = tuple(TAXONOMY)

# region: (UTC offset in hours, share of users); the skew keeps the UTC hour-of-day profile uneven
REGIONS = {
    "us-east": (-5, 0.30),
    "us-west": (-8, 0.12),
    "eu-west": (0, 0.18),
    "eu-central": (1, 0.20),
    "asia-pacific": (8, 0.12),
    "latam": (-3, 0.08),
}
# relative shopping intensity by local hour (0..23) on weekdays and weekends, and by day (Mon..Sun)
WEEKDAY_HOURS = (0.25, 0.15, 0.1, 0.08, 0.08, 0.12, 0.3, 0.55, 0.75, 0.85, 0.9, 0.95,
                 1.05, 1.0, 0.9, 0.9, 0.95, 1.05, 1.25, 1.5, 1.65, 1.55, 1.1, 0.55)  # fmt: skip
WEEKEND_HOURS = (0.35, 0.22, 0.14, 0.1, 0.08, 0.1, 0.18, 0.3, 0.5, 0.8, 1.05, 1.2,
                 1.25, 1.2, 1.15, 1.1, 1.1, 1.15, 1.25, 1.4, 1.45, 1.35, 1.0, 0.55)  # fmt: skip
DAY_WEIGHTS = (1.0, 0.97, 0.96, 0.98, 0.92, 1.2, 1.25)

BRAND_HEADS = ("Nor", "Cal", "Vex", "Aur", "Bel", "Dun", "Fen", "Gla", "Hal", "Ise", "Jun", "Kor", "Lum",
               "Mar", "Nex", "Orb", "Pel", "Qui", "Ros", "Sol", "Tor", "Ulv", "Ver", "Wyn", "Zen")  # fmt: skip
BRAND_TAILS = ("vik", "dera", "ton", "ora", "wick", "tek", "lux", "ent", "ova", "ford", "ion", "ara",
               "ex", "ly", "mont", "sen")  # fmt: skip
TITLE_WORDS = ("Classic", "Pro", "Essential", "Ultra", "Compact", "Premium", "Everyday", "Eco", "Smart",
               "Deluxe", "Lite", "Signature")  # fmt: skip
FEATURES = ("durable build", "easy to clean", "great value", "eco-friendly materials", "compact design",
            "long-lasting", "gift ready", "award-winning design", "lightweight", "best seller")  # fmt: skip
REVIEW_TEXTS = {
    1: ("Poor {leaf}. Would not buy {brand} again.", "Broke quickly, very disappointed with this {leaf}."),
    2: ("Below expectations for a {brand} {leaf}.", "The {leaf} works but the quality is poor."),
    3: ("Decent {leaf} for the price, nothing special.", "An average {leaf}; {brand} can do better."),
    4: ("Very good {leaf}, would buy {brand} again.", "Solid {leaf}, does what it promises."),
    5: ("Absolutely love this {leaf}! {brand} nailed it.", "Best {leaf} I have bought, great quality."),
}
FIRST_NAMES = ("Olivia", "Liam", "Emma", "Noah", "Amelia", "Oliver", "Sophia", "Elijah", "Mia", "Lucas",
               "Hannah", "Mateo", "Chloe", "Yuki", "Aisha", "Diego", "Freya", "Jonas", "Leila", "Marco")  # fmt: skip
LAST_NAMES = ("Smith", "Garcia", "Muller", "Rossi", "Dubois", "Kowalski", "Tanaka", "Silva", "Jensen",
              "Novak", "Brown", "Martin", "Lopez", "Schmidt", "Kim", "Nguyen", "Patel", "Cohen")  # fmt: skip
STREETS = ("Oak Street", "Maple Avenue", "Station Road", "High Street", "Church Lane", "Park Road",
           "Mill Lane", "River Drive", "Elm Court", "Harbour View")  # fmt: skip
CITIES = ("Springfield", "Riverton", "Lakeside", "Fairview", "Greenville", "Kingsport", "Ashford",
          "Milton", "Bayside", "Northwood")  # fmt: skip


# what `generate` writes under its output folder
OUTPUTS = {
    "events": "events",  # part-00000.parquet, ...
    "items": "items.parquet",
    "users": "users.parquet",
    "reviews": "reviews.parquet",
    "truth": "truth",
    "manifest": "manifest.json",
}


class GenerateError(ValueError):
    """Bad generator settings (reported to the user as one line)."""


@dataclass(frozen=True)
class TasteModel:
    """How tastes turn into behaviour: utility weights and funnel logits (stored with the truth)."""

    category: float = 1.0  # weight of log(categories * the user's affinity for the item's category)
    latent: float = 0.7  # weight of <user vector, item vector>
    quality: float = 0.5
    price: float = 0.8  # weight of price_sensitivity * log(list price / the leaf's typical price)
    slope: float = 0.8  # logit of each funnel step per unit of utility
    click: float = -4.5  # funnel intercepts (logits): view -> click -> cart -> purchase
    cart: float = -3.8
    purchase: float = -3.3
    staple: float = 1.0  # funnel logit bonus when re-visiting one of the user's staples
    discount: float = 4.0  # purchase logit per unit of price_sensitivity * -log(1 - discount)...
    discount_click: float = 0.5  # ...and this share of it on the click logit (a sale badge draws clicks)
    choice_candidates: int = 3  # a view picks the best (utility + Gumbel noise) of this many candidates
    review_share: float = 0.2  # purchases that get a review
    # rating = clip(round(mean + scale * (standardised utility - centre) + noise), 1, 5); buyers' utilities sit
    # about `rating_centre` standard deviations above a random pair's
    rating_mean: float = 4.1
    rating_scale: float = 1.3
    rating_centre: float = 2.6
    rating_noise: float = 0.6


@dataclass
class ShopTruth:
    """The ground truth of a generated shop: latent parameters of every user and item.

    ``utility`` and ``purchase_probability`` take the generator's ids ("u0000123", "i000045": before ingestion
    pseudonymises user ids) as arrays that broadcast against each other (e.g. one user id against many item
    ids) and return float arrays of the broadcast shape; the ``*_at`` twins take row indices instead.
    """

    category_affinity: np.ndarray  # (users, categories) float32; each row sums to 1
    favourite_brands: np.ndarray  # (users, 3) int32 brand codes
    brand_weights: np.ndarray  # (users, 3) float32 utility bonus of each favourite brand
    price_sensitivity: np.ndarray  # (users,) float32
    user_vectors: np.ndarray  # (users, dim) float32
    item_category: np.ndarray  # (items,) int16 top-category code (index into ``categories``)
    item_brand: np.ndarray  # (items,) int32 brand code (index into ``brands``)
    item_quality: np.ndarray  # (items,) float32
    item_vectors: np.ndarray  # (items, dim) float32
    item_price_ratio: np.ndarray  # (items,) float32 log(list price / the leaf category's typical price)
    model: TasteModel
    categories: list[str]
    brands: list[str]
    user_id_width: int  # ids are "u" / "i" + zero-padded index
    item_id_width: int
    utility_mean: float = 0.0  # of random (user, item) pairs: standardises ratings
    utility_std: float = 1.0

    @property
    def n_users(self) -> int:
        return len(self.price_sensitivity)

    @property
    def n_items(self) -> int:
        return len(self.item_quality)

    def utility_at(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Utility of items for users, by row index (arrays broadcast against each other)."""
        users, items = np.asarray(users), np.asarray(items)
        m = self.model
        # per-user and per-item gathers keep their own shapes; only the arithmetic broadcasts
        affinity = self.category_affinity[users, self.item_category[items]]
        category = np.clip(np.log(affinity * len(self.categories) + 1e-6), -3.0, 2.0)
        item_brand = self.item_brand[items]
        favourites, weights = self.favourite_brands[users], self.brand_weights[users]
        brand = sum((favourites[..., k] == item_brand) * weights[..., k] for k in range(favourites.shape[-1]))
        latent = np.einsum("...d,...d->...", self.user_vectors[users], self.item_vectors[items])
        price = self.price_sensitivity[users] * self.item_price_ratio[items]
        utility = (
            m.category * category
            + brand
            + m.latent * latent
            + m.quality * self.item_quality[items]
            - m.price * price
        )
        return np.broadcast_to(utility, np.broadcast_shapes(users.shape, items.shape)).astype(np.float32)

    def purchase_probability_at(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Probability that a view (at list price) ends in a purchase, by row index."""
        slope_u = self.model.slope * self.utility_at(users, items)
        m = self.model
        return _sigmoid(m.click + slope_u) * _sigmoid(m.cart + slope_u) * _sigmoid(m.purchase + slope_u)

    def user_index(self, user_ids: Any) -> np.ndarray:
        return _id_index(user_ids, "u", self.n_users)

    def item_index(self, item_ids: Any) -> np.ndarray:
        return _id_index(item_ids, "i", self.n_items)

    def utility(self, user_ids: Any, item_ids: Any) -> np.ndarray:
        """Utility of items for users (generator ids such as "u0000123"); higher = liked more."""
        return self.utility_at(self.user_index(user_ids), self.item_index(item_ids))

    def purchase_probability(self, user_ids: Any, item_ids: Any) -> np.ndarray:
        """Probability that showing the item to the user ends in a purchase (view -> ... -> purchase)."""
        return self.purchase_probability_at(self.user_index(user_ids), self.item_index(item_ids))

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / "users.npz", **{k: getattr(self, k) for k in _USER_ARRAYS})
        np.savez(folder / "items.npz", **{k: getattr(self, k) for k in _ITEM_ARRAYS})
        scalars = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _ARRAYS}
        scalars["model"] = asdict(self.model)
        (folder / "truth.json").write_text(json.dumps(scalars, indent=2))


TRUTH_FILES = ("truth/users.npz", "truth/items.npz", "truth/truth.json")
_USER_ARRAYS = ("category_affinity", "favourite_brands", "brand_weights", "price_sensitivity", "user_vectors")
_ITEM_ARRAYS = ("item_category", "item_brand", "item_quality", "item_vectors", "item_price_ratio")
_ARRAYS = _USER_ARRAYS + _ITEM_ARRAYS


def load_truth(folder: str | Path) -> ShopTruth:
    """The ground truth written by `generate` (give the output folder or its ``truth/``)."""
    folder = Path(folder)
    if (folder / "truth").is_dir():
        folder = folder / "truth"
    scalars = json.loads((folder / "truth.json").read_text())
    scalars["model"] = TasteModel(**scalars["model"])
    with np.load(folder / "users.npz") as users, np.load(folder / "items.npz") as items:
        arrays = {k: users[k] for k in _USER_ARRAYS} | {k: items[k] for k in _ITEM_ARRAYS}
    return ShopTruth(**arrays, **scalars)


def _id_index(ids: Any, prefix: str, n: int) -> np.ndarray:
    """Row indices of generator ids ("u0000123" -> 123); KeyError for ids this shop never made."""
    values = np.asarray(ids, dtype=str)
    flat = values.ravel()
    ok = np.char.startswith(flat, prefix) & (np.char.str_len(flat) > 1) & (np.char.str_len(flat) < 19)
    digits = np.char.lstrip(np.where(ok, flat, prefix + "x"), prefix)
    ok &= np.char.isdigit(digits)
    index = np.where(ok, digits, "-1").astype(np.int64)
    bad = ~ok | (index < 0) | (index >= n)
    if bad.any():
        raise KeyError(f"unknown id(s): {flat[bad][:5].tolist()}")
    return index.reshape(values.shape)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


# --------------------------------------------------------------------------------------- config / result


@dataclass
class GenerateConfig:
    users: int = 10_000
    items: int = 2_000
    events: int = 1_000_000
    seed: int = 42
    out: Path = Path("data/synthetic")
    days: int = 180
    start: str | None = None  # first day (YYYY-MM-DD, UTC); None: the period ends with 2026-06-30
    chunk_events: int = 500_000  # events per part file (about: a block of users never splits)
    with_pii: bool = False  # add e-mail, phone, full_name and address to users.parquet

    def dates(self) -> tuple[datetime, datetime]:
        """First instant and (exclusive) end of the period, UTC."""
        if self.start is None:
            end = datetime.fromisoformat(DEFAULT_END).replace(tzinfo=UTC)
            return end - timedelta(days=self.days), end
        try:
            start = datetime.fromisoformat(self.start)
        except ValueError:
            raise GenerateError(f"start {self.start!r} is not a date (YYYY-MM-DD)") from None
        start = start.replace(tzinfo=UTC) if start.tzinfo is None else start.astimezone(UTC)
        try:
            return start, start + timedelta(days=self.days)
        except OverflowError:
            raise GenerateError(f"{self.days} days after {self.start} is past year 9999") from None

    def period(self) -> tuple[np.int64, np.int64]:
        """(start, end) in ns since the epoch, UTC; end is exclusive."""
        start, end = (np.int64(round(d.timestamp() * 1e6)) * 1000 for d in self.dates())
        return start, end

    def validate(self) -> None:
        for name, low in (("users", 1), ("items", len(CATEGORIES)), ("events", 0), ("days", 1)):
            if getattr(self, name) < low:
                raise GenerateError(f"{name} must be at least {low} (got {getattr(self, name)})")
        if self.chunk_events < 1000:
            raise GenerateError(f"chunk_events must be at least 1000 (got {self.chunk_events})")
        start, end = self.dates()
        if start < datetime.fromisoformat(MIN_TIMESTAMP).replace(tzinfo=UTC):
            raise GenerateError(f"the period must start on or after {MIN_TIMESTAMP}")
        if end > datetime.now(UTC):
            raise GenerateError("the period must end in the past (use an earlier --start or fewer --days)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"out": str(self.out)}


@dataclass
class GenerateResult:
    out: Path
    events: int
    event_types: dict[str, int]
    users: int
    items: int
    reviews: int
    parts: int
    seconds: float
    events_per_second: float
    # what was written, by the names of OUTPUTS: events (the folder of parts), items, users, reviews, ...
    paths: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"out": str(self.out)}


# --------------------------------------------------------------------------------------- the world


@dataclass
class Catalogue:
    """Items with the per-category popularity index used to sample views."""

    leaf: np.ndarray  # (items,) leaf code: index into leaf names
    created_at: np.ndarray  # (items,) int64 ns
    price: np.ndarray  # (items,) float64 list price
    consumable: np.ndarray  # (items,) bool
    order: np.ndarray  # item indices sorted by top category
    cum_popularity: np.ndarray  # cumulative popularity along ``order``
    cat_first: np.ndarray  # (categories,) first position of each category in ``order``
    cat_last: np.ndarray
    cat_mass_from: np.ndarray  # (categories,) cum_popularity just before the category
    cat_mass: np.ndarray  # (categories,) total popularity of the category
    anchor: np.ndarray  # (categories,) an item of each category that exists before the period
    leaf_names: list[str]
    leaf_paths: list[str]


@dataclass
class Population:
    signup: np.ndarray  # (users,) int64 ns
    active_from: np.ndarray  # (users,) int64 ns: max(signup, period start)
    region: np.ndarray  # (users,) region code
    utc_offset: np.ndarray  # (users,) int64 ns
    activity: np.ndarray  # (users,) float64 share of events (relative)


@dataclass
class World:
    truth: ShopTruth
    catalogue: Catalogue
    population: Population
    start: np.int64
    end: np.int64
    season: np.ndarray  # (7, 24) acceptance probability by local day of week and hour


def _brand_names(n: int, rng: np.random.Generator) -> list[str]:
    names = [head + tail for head in BRAND_HEADS for tail in BRAND_TAILS]
    picked = [names[i] for i in rng.permutation(len(names))[: min(n, len(names))]]
    # past the syllable combinations, numbered editions keep names unique
    return picked + [f"{picked[i % len(picked)]} {i // len(picked) + 1}" for i in range(len(picked), n)]


def _make_world(cfg: GenerateConfig, rng: np.random.Generator) -> World:
    start, end = cfg.period()
    dim = 12
    n_cat = len(CATEGORIES)
    n_brands = int(np.clip(cfg.items // 40, 3 * n_cat, 4000))
    catalogue, item_arrays = _make_catalogue(cfg.items, n_brands, start, end, dim, rng)
    population = _make_population(cfg.users, start, end, rng)
    affinity = rng.dirichlet(np.full(n_cat, 0.3), cfg.users).astype(np.float32)
    favourites = _favourite_brands(affinity, n_brands, rng)
    truth = ShopTruth(
        category_affinity=affinity,
        favourite_brands=favourites,
        brand_weights=np.tile(np.array([1.2, 0.8, 0.5], np.float32), (cfg.users, 1)),
        price_sensitivity=rng.lognormal(0.0, 0.5, cfg.users).astype(np.float32),
        user_vectors=(rng.standard_normal((cfg.users, dim)) / math.sqrt(dim)).astype(np.float32),
        model=TasteModel(),
        categories=list(CATEGORIES),
        brands=_brand_names(n_brands, rng),
        user_id_width=max(7, len(str(cfg.users - 1))),
        item_id_width=max(6, len(str(cfg.items - 1))),
        **item_arrays,
    )
    sample_u = rng.integers(0, cfg.users, 20_000)
    sample_i = rng.integers(0, cfg.items, 20_000)
    utility = truth.utility_at(sample_u, sample_i)
    truth.utility_mean, truth.utility_std = float(utility.mean()), float(utility.std() + 1e-9)
    return World(truth, catalogue, population, start, end, _season())


def _make_catalogue(
    n: int, n_brands: int, start: np.int64, end: np.int64, dim: int, rng: np.random.Generator
) -> tuple[Catalogue, dict[str, np.ndarray]]:
    n_cat = len(CATEGORIES)
    leaf_names, leaf_paths, leaf_ref = [], [], []
    for top, (base_price, _, subs) in TAXONOMY.items():
        for sub, leaves in subs.items():
            for leaf in leaves:
                leaf_names.append(leaf)
                leaf_paths.append(CATEGORY_SEPARATOR.join((top, sub, leaf)))
                leaf_ref.append(base_price * rng.lognormal(0.0, 0.35))
    leaf_ref_a = np.array(leaf_ref)
    per_top = len(leaf_names) // n_cat  # every top category has the same number of leaves, in order
    # every category gets items (the first ones), then categories differ in size
    sizes = rng.dirichlet(np.full(n_cat, 3.0))
    top = np.concatenate([np.arange(n_cat), rng.choice(n_cat, n - n_cat, p=sizes)])
    leaf = (top * per_top + rng.integers(0, per_top, n)).astype(np.int32)
    # brands specialise: brand b sells in category b % n_cat; a few big brands per category dominate
    per_cat = n_brands // n_cat
    rank = np.minimum(rng.zipf(1.6, n) - 1, per_cat - 1)
    brand = (top + n_cat * rank).astype(np.int32)
    tier = rng.lognormal(0.0, 0.3, n_brands)
    price = leaf_ref_a[leaf] * tier[brand] * rng.lognormal(0.0, 0.3, n)
    price = np.maximum(np.round(price) - 0.01, 0.99)
    quality = (np.log(tier[brand]) / 0.3 * 0.5 + rng.standard_normal(n) * 0.85).astype(np.float32)
    leaf_vectors = rng.standard_normal((len(leaf_names), dim))
    vectors = (0.6 * leaf_vectors[leaf] + 0.8 * rng.standard_normal((n, dim))).astype(np.float32)
    # long tail: Zipf popularity over a ranking that favours quality
    pop_rank = np.argsort(np.argsort(-(quality + rng.standard_normal(n))))
    popularity = (pop_rank + 1.0) ** -1.0 * rng.lognormal(0.0, 0.3, n)
    created = _arrivals(n, share_new=0.3, start=start, end=end, rng=rng)
    created[:n_cat] = start - rng.integers(HOUR, HISTORY_DAYS * DAY, n_cat)  # anchors predate the period
    order = np.argsort(top, kind="stable")
    cum = np.cumsum(popularity[order])
    sorted_top = top[order]
    cat_first = np.searchsorted(sorted_top, np.arange(n_cat), side="left")
    cat_last = np.searchsorted(sorted_top, np.arange(n_cat), side="right") - 1
    mass_from = np.where(cat_first > 0, cum[np.maximum(cat_first - 1, 0)], 0.0)
    catalogue = Catalogue(
        leaf=leaf,
        created_at=created,
        price=price,
        consumable=np.array([TAXONOMY[c][1] for c in CATEGORIES])[top],
        order=order,
        cum_popularity=cum,
        cat_first=cat_first,
        cat_last=cat_last,
        cat_mass_from=mass_from,
        cat_mass=cum[cat_last] - mass_from,
        anchor=np.arange(n_cat),
        leaf_names=leaf_names,
        leaf_paths=leaf_paths,
    )
    arrays = {
        "item_category": top.astype(np.int16),
        "item_brand": brand,
        "item_quality": quality,
        "item_vectors": vectors,
        "item_price_ratio": np.log(price / leaf_ref_a[leaf]).astype(np.float32),
    }
    return catalogue, arrays


def _arrivals(
    n: int, share_new: float, start: np.int64, end: np.int64, rng: np.random.Generator
) -> np.ndarray:
    """Arrival times: ``share_new`` arrive during the period (up to a day before its end), the rest before."""
    history_from = max(start - HISTORY_DAYS * DAY, np.datetime64(MIN_TIMESTAMP, "ns").astype(np.int64))
    new = rng.random(n) < share_new
    before = history_from + (rng.random(n) * (start - history_from)).astype(np.int64)
    during = start + (rng.random(n) * max(end - start - DAY, HOUR)).astype(np.int64)
    return np.where(new, during, before).astype(np.int64)


def _make_population(n: int, start: np.int64, end: np.int64, rng: np.random.Generator) -> Population:
    signup = _arrivals(n, share_new=0.35, start=start, end=end, rng=rng)
    active_from = np.maximum(signup, start)
    share = np.array([s for _, s in REGIONS.values()])
    region = rng.choice(len(REGIONS), n, p=share / share.sum())
    offsets = np.array([h for h, _ in REGIONS.values()], np.int64) * HOUR
    window = (end - SESSION_SPAN - active_from).clip(HOUR) / (end - start)
    activity = rng.lognormal(0.0, 1.0, n) * window
    return Population(signup, active_from, region, offsets[region], activity)


def _favourite_brands(affinity: np.ndarray, n_brands: int, rng: np.random.Generator) -> np.ndarray:
    """Three brands per user, from the categories they like (brand b sells in category b % categories)."""
    n_cat = affinity.shape[1]
    per_cat = n_brands // n_cat
    cats = np.stack([_sample_rows(affinity, rng) for _ in range(3)], axis=1)
    return (cats + n_cat * rng.integers(0, per_cat, cats.shape)).astype(np.int32)


def _season() -> np.ndarray:
    hours = np.array([WEEKDAY_HOURS] * 5 + [WEEKEND_HOURS] * 2) * np.array(DAY_WEIGHTS)[:, None]
    return hours / hours.max()


def _sample_rows(probabilities: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One column index per row, drawn from that row's (unnormalised) probabilities."""
    cum = np.cumsum(probabilities, axis=1)
    u = rng.random(len(cum)) * cum[:, -1]
    return np.minimum((cum < u[:, None]).sum(axis=1), probabilities.shape[1] - 1)


# --------------------------------------------------------------------------------------- behaviour

MEAN_SESSION_VIEWS = 6.0  # views per session (geometric)
VIEW_GAP = 45 * SECOND  # mean time between two views of a session
MAX_VIEW_OFFSET = 90 * 60 * SECOND  # a session's last view starts within this of its first
FUNNEL_GAPS = ((2, 10), (5, 40), (10, 90))  # seconds (minimum, mean extra): view->click, ->cart, ->purchase
MAX_FUNNEL_GAP = 300 * SECOND  # so the whole session stays within SESSION_SPAN
FOCUS = 0.8  # share of a session's views in its focus category
EXPLORE = 0.1  # share of category choices that follow the shop's popularity rather than the user's taste
DISCOUNT_SHARE, DISCOUNT_RANGE = 0.25, (0.05, 0.3)
STAPLES = 3  # items a user keeps coming back to (mostly consumables)
REVIEW_DELAY = 4 * DAY  # mean time from purchase to review


@dataclass
class Chains:
    """View chains of a block: each view and how far down the funnel it went (not yet event rows)."""

    user: np.ndarray  # int64 user index
    item: np.ndarray  # int64 item index
    session: np.ndarray  # int64 session number (unique over the whole run)
    view_time: np.ndarray  # int64 ns
    gaps: np.ndarray  # (n, 3) int64 ns: view -> click -> cart -> purchase
    price: np.ndarray  # float64 unit price of this visit (list price less any discount)
    quantity: np.ndarray  # float64 units carted / bought
    stages: np.ndarray  # int64: 0 viewed only, 1 clicked, 2 carted, 3 purchased
    utility: np.ndarray  # float32

    @property
    def n_events(self) -> int:
        return int(self.stages.sum()) + len(self.stages)

    def subset(self, keep: np.ndarray) -> Chains:
        return Chains(**{f.name: getattr(self, f.name)[keep] for f in fields(self)})

    @staticmethod
    def concat(parts: list[Chains]) -> Chains:
        return Chains(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(Chains)})


def _browse_categories(world: World, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A category per row: the user's taste, sometimes what is popular in the shop."""
    shop = world.catalogue.cat_mass / world.catalogue.cat_mass.sum()
    probabilities = (1 - EXPLORE) * world.truth.category_affinity[users] + EXPLORE * shop.astype(np.float32)
    return _sample_rows(probabilities, rng)


def _popular_in(catalogue: Catalogue, categories: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Items drawn by popularity within each row's category (any shape)."""
    target = (
        catalogue.cat_mass_from[categories] + rng.random(categories.shape) * catalogue.cat_mass[categories]
    )
    position = np.searchsorted(catalogue.cum_popularity, target, side="right")
    position = np.clip(position, catalogue.cat_first[categories], catalogue.cat_last[categories])
    return catalogue.order[position]


def _pick_items(
    world: World, users: np.ndarray, categories: np.ndarray, at: np.ndarray, rng: np.random.Generator, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """For each row, the most appealing (utility + Gumbel noise) of k popular candidates that exist at ``at``.

    Returns (items, utilities). Rows whose candidates are all too new draw again, then fall back to the
    category's anchor item (which predates the period).
    """
    n = len(users)
    items, utility = np.empty(n, np.int64), np.empty(n, np.float32)
    todo = np.arange(n)
    for _ in range(4):
        if not todo.size:
            break
        candidates = _popular_in(world.catalogue, np.repeat(categories[todo, None], k, axis=1), rng)
        valid = world.catalogue.created_at[candidates] <= at[todo, None]
        scores = world.truth.utility_at(users[todo, None], candidates)
        best = np.where(valid, scores + rng.gumbel(size=scores.shape), -np.inf).argmax(axis=1)
        found = valid.any(axis=1)
        rows, best = todo[found], best[found]
        items[rows] = candidates[found, best]
        utility[rows] = scores[found, best]
        todo = todo[~found]
    items[todo] = world.catalogue.anchor[categories[todo]]
    utility[todo] = world.truth.utility_at(users[todo], items[todo])
    return items, utility


class Staples:
    """Per user of a block: STAPLES favourite items (mostly consumables) and the share of views on them.

    Filled lazily for the users that shop, so a block of many idle users costs no candidate draws.
    """

    def __init__(self, lo: int, hi: int) -> None:
        self.lo = lo
        self.items = np.full((hi - lo, STAPLES), -1, np.int64)
        self.share = np.zeros(hi - lo)

    def of(self, world: World, users: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(staple items (len(users), STAPLES), revisit share) of the given users."""
        rows = users - self.lo
        new = np.unique(rows[self.items[rows, 0] < 0])
        if new.size:
            affinity = world.truth.category_affinity[new + self.lo]
            consumable = np.array([TAXONOMY[c][1] for c in CATEGORIES])
            categories = _sample_rows(
                np.repeat(affinity * np.where(consumable, 1.0, 0.15), STAPLES, axis=0), rng
            )
            owners = np.repeat(new + self.lo, STAPLES)
            items, _ = _pick_items(world, owners, categories, np.full(len(owners), world.end), rng, k=8)
            self.items[new] = items.reshape(-1, STAPLES)
            self.share[new] = 0.03 + 0.15 * affinity[:, consumable].sum(axis=1)
        return self.items[rows], self.share[rows]


def _session_starts(world: World, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Start times after each user's signup, following local hour-of-day and day-of-week rhythms."""
    population = world.population
    low = population.active_from[users]
    span = np.maximum(world.end - SESSION_SPAN - low, HOUR)
    starts = np.empty(len(users), np.int64)
    todo = np.arange(len(users))
    while todo.size:  # thinning: accept a uniform time with the season's probability
        candidate = low[todo] + (rng.random(todo.size) * span[todo]).astype(np.int64)
        local = candidate + population.utc_offset[users[todo]]
        hour, day = (local // HOUR) % 24, (local // DAY + 3) % 7  # 1970-01-01 was a Thursday (Mon = 0)
        accept = rng.random(todo.size) < world.season[day, hour]
        starts[todo[accept]] = candidate[accept]
        todo = todo[~accept]
    return starts


def _simulate_chains(
    world: World,
    lo: int,
    hi: int,
    n: int,
    staples: Staples,
    first_session: int,
    rng: np.random.Generator,
) -> Chains:
    """About ``n`` view chains of users lo..hi-1, grouped into sessions numbered from ``first_session``."""
    truth, model = world.truth, world.truth.model
    weights = world.population.activity[lo:hi]
    user = np.repeat(np.arange(lo, hi), rng.multinomial(n, weights / weights.sum()))
    new_session = np.ones(n, bool)
    new_session[1:] = (user[1:] != user[:-1]) | (rng.random(n - 1) < 1 / MEAN_SESSION_VIEWS)
    session = np.cumsum(new_session) - 1
    heads = np.flatnonzero(new_session)
    session_start = _session_starts(world, user[heads], rng)[session]
    focus = _browse_categories(world, user[heads], rng)[session]

    elapsed = np.cumsum(rng.exponential(VIEW_GAP, n).astype(np.int64))
    offset = np.minimum(elapsed - elapsed[heads][session], MAX_VIEW_OFFSET)
    category = np.where(rng.random(n) < FOCUS, focus, _browse_categories(world, user, rng))
    item, utility = _pick_items(world, user, category, session_start, rng, model.choice_candidates)

    # some views revisit a staple (when it already exists): the road to repeat purchases
    staple_items, staple_share = staples.of(world, user, rng)
    staple = staple_items[np.arange(n), rng.integers(0, STAPLES, n)]
    revisit = (rng.random(n) < staple_share) & (world.catalogue.created_at[staple] <= session_start)
    item = np.where(revisit, staple, item)
    utility[revisit] = truth.utility_at(user[revisit], item[revisit])

    discount = np.where(rng.random(n) < DISCOUNT_SHARE, rng.uniform(*DISCOUNT_RANGE, n), 0.0)
    drive = model.slope * utility + model.staple * revisit
    deal = model.discount * truth.price_sensitivity[user] * -np.log1p(-discount)
    logits = np.stack(
        [
            model.click + drive + model.discount_click * deal,
            model.cart + drive,
            model.purchase + drive + deal,
        ],
        axis=1,
    )
    passed = rng.random((n, 3)) < _sigmoid(logits)
    stages = np.cumprod(passed, axis=1).sum(axis=1)

    consumable = world.catalogue.consumable[item]
    quantity = 1.0 + rng.poisson(np.where(consumable, 0.7, 0.08))
    minimum, extra = (np.array(column, np.float64) * SECOND for column in zip(*FUNNEL_GAPS, strict=True))
    gaps = np.minimum(minimum + rng.exponential(1.0, (n, 3)) * extra, MAX_FUNNEL_GAP).astype(np.int64)
    return Chains(
        user=user,
        item=item,
        session=first_session + session,
        view_time=session_start + offset,
        gaps=gaps,
        price=np.round(world.catalogue.price[item] * (1 - discount), 2),
        quantity=quantity,
        stages=stages,
        utility=utility,
    )


def _trim(chains: Chains, surplus: int, rng: np.random.Generator) -> Chains:
    """Drop exactly ``surplus`` events: whole random chains, then the last step of a few more."""
    length = chains.stages + 1
    order = rng.permutation(len(length))
    dropped = np.cumsum(length[order])
    whole = int(np.searchsorted(dropped, surplus, side="right"))
    rest = surplus - (int(dropped[whole - 1]) if whole else 0)
    keep = np.ones(len(length), bool)
    keep[order[:whole]] = False
    shorten = order[whole : whole + rest]
    chains.stages[shorten] -= 1  # a view-only chain loses its view: the chain goes
    keep[shorten[chains.stages[shorten] < 0]] = False
    return chains.subset(keep)


def _block_chains(
    world: World,
    lo: int,
    hi: int,
    target: int,
    per_chain: float,
    first_session: int,
    rng: np.random.Generator,
) -> tuple[Chains, int]:
    """Chains of users lo..hi-1 making exactly ``target`` events; also the next free session number."""
    staples = Staples(lo, hi)
    chains: Chains | None = None
    while chains is None or chains.n_events < target:  # one round but for bad luck
        missing = target - (chains.n_events if chains else 0)
        part = _simulate_chains(
            world, lo, hi, int(missing / per_chain * 1.03) + 16, staples, first_session, rng
        )
        first_session = int(part.session[-1]) + 1
        chains = _durables_bought_once(world, part if chains is None else Chains.concat([chains, part]))
    return _trim(chains, chains.n_events - target, rng), first_session


def _durables_bought_once(world: World, chains: Chains) -> Chains:
    """A user buys a durable item (a laptop, a tent) once: later visits that would buy it stop at the click.

    Only consumables are bought again. A block holds all of its users' chains, so this is global.
    """
    bought = np.flatnonzero((chains.stages == 3) & ~world.catalogue.consumable[chains.item])
    pair = chains.user[bought] * world.truth.n_items + chains.item[bought]
    order = np.lexsort((chains.view_time[bought], pair))  # by pair, then time
    bought, pair = bought[order], pair[order]
    chains.stages[bought[1:][pair[1:] == pair[:-1]]] = 1
    return chains


def _blocks(activity: np.ndarray, events: int, chunk: int) -> list[tuple[int, int, int]]:
    """(first user, end user, events) of consecutive blocks of users with about ``chunk`` events each."""
    if events == 0:
        return []
    share = np.cumsum(activity) / activity.sum() * events
    cum = np.round(share).astype(np.int64)
    cum[-1] = events
    ends = np.searchsorted(cum, np.arange(chunk, events, chunk), side="left") + 1
    bounds = np.unique(np.concatenate([[0], ends, [len(cum)]]))
    blocks = []
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        target = int(cum[hi - 1] - (cum[lo - 1] if lo else 0))
        if target:
            blocks.append((int(lo), int(hi), target))
    return blocks


# --------------------------------------------------------------------------------------- tables


def fixed_ids(prefix: str, numbers: np.ndarray, width: int) -> pa.StringArray:
    """``prefix`` + zero-padded numbers as an Arrow string array, built without Python strings."""
    numbers = np.asarray(numbers, np.int64)
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    chars = np.empty((len(numbers), len(prefix) + width), np.uint8)
    chars[:, : len(prefix)] = np.frombuffer(prefix.encode(), np.uint8)
    chars[:, len(prefix) :] = (numbers[:, None] // powers) % 10 + ord("0")
    offsets = np.arange(len(numbers) + 1, dtype=np.int32) * chars.shape[1]
    return pa.StringArray.from_buffers(len(numbers), pa.py_buffer(offsets), pa.py_buffer(chars.tobytes()))


def _timestamps(ns: np.ndarray) -> pa.Array:
    return pa.array(np.asarray(ns, np.int64), pa.int64()).cast(pa.timestamp("ns", tz="UTC"))


def _events_table(world: World, chains: Chains) -> tuple[pa.Table, np.ndarray]:
    """Event rows (sorted by time) of the chains, and each row's funnel step."""
    length = chains.stages + 1
    chain = np.repeat(np.arange(len(length)), length)
    step = np.arange(len(chain)) - np.repeat(np.cumsum(length) - length, length)
    times = chains.view_time[:, None] + np.concatenate(
        [np.zeros((len(length), 1), np.int64), np.cumsum(chains.gaps, axis=1)], axis=1
    )
    timestamp = times[chain, step]
    order = np.argsort(timestamp, kind="stable")
    chain, step, timestamp = chain[order], step[order], timestamp[order]
    table = pa.table(
        {
            "user_id": fixed_ids("u", chains.user[chain], world.truth.user_id_width),
            "item_id": fixed_ids("i", chains.item[chain], world.truth.item_id_width),
            "event_type": pa.DictionaryArray.from_arrays(
                pa.array(step.astype(np.int8)), pa.array(EVENT_NAMES)
            ).dictionary_decode(),
            "timestamp": _timestamps(timestamp),
            "session_id": fixed_ids("s", chains.session[chain], 10),
            "price": pa.array(chains.price[chain]),
            "quantity": pa.array(np.where(step >= 2, chains.quantity[chain], 1.0)),
        }
    )
    return table, step


def _reviews_table(world: World, chains: Chains, rng: np.random.Generator) -> pa.Table:
    """Reviews by some buyers, after the purchase and within the period; ratings follow their utility."""
    truth, model = world.truth, world.truth.model
    bought = np.flatnonzero((chains.stages == 3) & (rng.random(len(chains.stages)) < model.review_share))
    bought = bought[
        np.unique(chains.user[bought] * truth.n_items + chains.item[bought], return_index=True)[1]
    ]
    purchase_time = chains.view_time[bought] + chains.gaps[bought].sum(axis=1)
    when = purchase_time + HOUR + rng.exponential(REVIEW_DELAY, len(bought)).astype(np.int64)
    bought, when = bought[when < world.end], when[when < world.end]
    z = (chains.utility[bought] - truth.utility_mean) / truth.utility_std
    noise = rng.normal(0.0, model.rating_noise, len(bought))
    rating = np.clip(
        np.round(model.rating_mean + model.rating_scale * (z - model.rating_centre) + noise), 1, 5
    )
    items = chains.item[bought]
    variant = rng.integers(0, 2, len(bought))
    leaf_names, brand_names = world.catalogue.leaf_names, truth.brands
    text = [
        REVIEW_TEXTS[int(r)][v].format(leaf=leaf_names[leaf].lower(), brand=brand_names[brand])
        for r, v, leaf, brand in zip(
            rating, variant, world.catalogue.leaf[items], truth.item_brand[items], strict=True
        )
    ]
    order = np.argsort(when, kind="stable")
    return pa.table(
        {
            "user_id": fixed_ids("u", chains.user[bought][order], truth.user_id_width),
            "item_id": fixed_ids("i", items[order], truth.item_id_width),
            "rating": pa.array(rating[order].astype(np.float64)),
            "text": pa.array([text[i] for i in order], pa.string()),
            "timestamp": _timestamps(when[order]),
        }
    )


REVIEW_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("item_id", pa.string()),
        ("rating", pa.float64()),
        ("text", pa.string()),
        ("timestamp", pa.timestamp("ns", tz="UTC")),
    ]
)


def _items_table(world: World, rng: np.random.Generator) -> pa.Table:
    catalogue, truth = world.catalogue, world.truth
    n = truth.n_items
    paths = [p.split(CATEGORY_SEPARATOR) for p in catalogue.leaf_paths]
    brands = [truth.brands[b] for b in truth.item_brand]
    words = rng.integers(0, len(TITLE_WORDS), n)
    models = rng.integers(100, 1000, n)
    features = rng.integers(0, len(FEATURES), (n, 2))
    titles, descriptions = [], []
    for i in range(n):
        top, sub, leaf = paths[catalogue.leaf[i]]
        word = TITLE_WORDS[words[i]]
        titles.append(f"{brands[i]} {word} {leaf} {models[i]}")
        first, second = FEATURES[features[i, 0]], FEATURES[(features[i, 0] + 1 + features[i, 1] % 9) % 10]
        descriptions.append(
            f"{word} {leaf.lower()} by {brands[i]}, from our {sub.lower()} range in {top.lower()}: "
            f"{first} and {second}."
        )
    return pa.table(
        {
            "item_id": fixed_ids("i", np.arange(n), truth.item_id_width),
            "title": pa.array(titles, pa.string()),
            "description": pa.array(descriptions, pa.string()),
            "category": pa.array([CATEGORIES[c] for c in truth.item_category], pa.string()),
            "category_path": pa.array([catalogue.leaf_paths[leaf] for leaf in catalogue.leaf], pa.string()),
            "brand": pa.array(brands, pa.string()),
            "price": pa.array(catalogue.price),
            "created_at": _timestamps(catalogue.created_at),
        }
    )


def _users_table(world: World, with_pii: bool, rng: np.random.Generator) -> pa.Table:
    population, n = world.population, world.truth.n_users
    regions = list(REGIONS)
    columns: dict[str, pa.Array] = {
        "user_id": fixed_ids("u", np.arange(n), world.truth.user_id_width),
        "signup_time": _timestamps(population.signup),
        "region": pa.DictionaryArray.from_arrays(
            pa.array(population.region.astype(np.int32)), pa.array(regions)
        ).dictionary_decode(),
    }
    if with_pii:
        columns |= _personal_data(n, rng)
    return pa.table(columns)


def _personal_data(n: int, rng: np.random.Generator) -> dict[str, pa.Array]:
    """Fake but realistic-looking direct identifiers (ingestion must drop them)."""
    first = rng.integers(0, len(FIRST_NAMES), n)
    last = rng.integers(0, len(LAST_NAMES), n)
    number = rng.integers(1, 10_000, n)
    phone = rng.integers(0, 10_000_000, n)
    house, street, city = (
        rng.integers(1, 400, n),
        rng.integers(0, len(STREETS), n),
        rng.integers(0, len(CITIES), n),
    )
    names = [f"{FIRST_NAMES[f]} {LAST_NAMES[s]}" for f, s in zip(first, last, strict=True)]
    return {
        "email": pa.array(
            [
                f"{FIRST_NAMES[f].lower()}.{LAST_NAMES[s].lower()}{k}@example.com"
                for f, s, k in zip(first, last, number, strict=True)
            ]
        ),
        "phone": pa.array([f"+1-555-{p // 10_000:03d}-{p % 10_000:04d}" for p in phone]),
        "full_name": pa.array(names),
        "address": pa.array(
            [f"{h} {STREETS[s]}, {CITIES[c]}" for h, s, c in zip(house, street, city, strict=True)]
        ),
    }


# --------------------------------------------------------------------------------------- the stage


def _clear(out: Path) -> None:
    """Remove what an earlier run wrote here (only the generator's own files)."""
    for path in (out / "events").glob("part-*.parquet"):
        path.unlink()
    for name in ("items.parquet", "users.parquet", "reviews.parquet", "manifest.json", *TRUTH_FILES):
        (out / name).unlink(missing_ok=True)


def generate(cfg: GenerateConfig, progress: bool = False) -> GenerateResult:
    """Write a synthetic shop to ``cfg.out`` (layout in the module docstring); same config, same files."""
    from tqdm import tqdm

    cfg.validate()
    began = time.perf_counter()
    out = Path(cfg.out)
    _clear(out)
    (out / "events").mkdir(parents=True, exist_ok=True)
    world = _make_world(cfg, np.random.default_rng([cfg.seed, 0]))
    tables_rng = np.random.default_rng([cfg.seed, 2])
    pq.write_table(_items_table(world, tables_rng), out / "items.parquet")
    pq.write_table(_users_table(world, cfg.with_pii, tables_rng), out / "users.parquet")
    world.truth.save(out / "truth")

    counts = dict.fromkeys(EVENT_NAMES, 0)
    reviews, parts, per_chain, next_session = 0, 0, 1.1, 0
    bar = tqdm(total=cfg.events, unit="ev", unit_scale=True, file=sys.stderr, disable=not progress)
    with bar, pq.ParquetWriter(out / "reviews.parquet", REVIEW_SCHEMA) as review_writer:
        for b, (lo, hi, target) in enumerate(
            _blocks(world.population.activity, cfg.events, cfg.chunk_events)
        ):
            rng = np.random.default_rng([cfg.seed, 1, b])
            chains, next_session = _block_chains(world, lo, hi, target, per_chain, next_session, rng)
            per_chain = chains.n_events / max(len(chains.stages), 1)
            table, step = _events_table(world, chains)
            pq.write_table(table, out / "events" / f"part-{parts:05d}.parquet")
            parts += 1
            for s, name in enumerate(EVENT_NAMES):
                counts[name] += int((step == s).sum())
            review_table = _reviews_table(world, chains, rng)
            review_writer.write_table(review_table)
            reviews += review_table.num_rows
            bar.update(target)
    seconds = time.perf_counter() - began
    result = GenerateResult(
        out=out,
        events=sum(counts.values()),
        event_types=counts,
        users=cfg.users,
        items=cfg.items,
        reviews=reviews,
        parts=parts,
        seconds=round(seconds, 3),
        events_per_second=round(sum(counts.values()) / seconds, 1),
        paths={name: str(out / file) for name, file in OUTPUTS.items()},
    )
    _write_manifest(cfg, world, result)
    return result


def _write_manifest(cfg: GenerateConfig, world: World, result: GenerateResult) -> None:
    manifest = {
        "generator": GENERATOR,
        "seed": cfg.seed,
        "config": cfg.to_dict(),
        "period": {
            "start": str(np.datetime64(int(world.start), "ns")) + "Z",
            "end": str(np.datetime64(int(world.end), "ns")) + "Z",
        },
        "counts": {
            "events": result.events,
            "users": result.users,
            "items": result.items,
            "reviews": result.reviews,
            "parts": result.parts,
        },
        "event_types": result.event_types,
        "model": asdict(world.truth.model),
        "seconds": result.seconds,
        "events_per_second": result.events_per_second,
    }
    (Path(cfg.out) / "manifest.json").write_text(json.dumps(manifest, indent=2))
