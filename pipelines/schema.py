"""The canonical shop schema: every source is ingested into these tables (Parquet, one file per table).

A diagram and the column meanings are in README.md ("Data model"). Ids are always strings; user ids are
pseudonymised at ingestion (pipelines/privacy.py). Optional columns may be absent (a ratings file has no
price); when present they have the type given here.
"""

from __future__ import annotations

INTERACTIONS = "interactions"  # behaviour events
ITEMS = "items"  # the catalogue
USERS = "users"
REVIEWS = "reviews"
TABLES = (INTERACTIONS, ITEMS, USERS, REVIEWS)

EVENT_TYPES = ("view", "click", "cart", "purchase", "rating")

# interactions.parquet (one row per behaviour event)
#   user_id: str, item_id: str        -- required, non-empty
#   rating: float64 (nullable)        -- explicit rating (event_type "rating")
#   timestamp: datetime64[ns, UTC]    -- required
#   event_type: str in EVENT_TYPES    -- required
#   session_id: str (nullable)        -- session / order / basket the event belongs to
#   price: float64 (nullable)         -- unit price at event time (views, carts, purchases)
#   quantity: float64 (nullable)      -- units (carts, purchases)
#   source_file: str                  -- the file the row was read from ("" for bundled datasets)
#   source_row: int64                 -- 1-based data row in that file (header excluded)
INTERACTION_COLUMNS = (
    "user_id",
    "item_id",
    "rating",
    "timestamp",
    "event_type",
    "session_id",
    "price",
    "quantity",
    "source_file",
    "source_row",
)
EVENT_REQUIRED = ("user_id", "item_id", "timestamp")  # columns a source must have (after mapping)

# items.parquet: item_id plus whatever the source has, among
#   title: str, description: str, category: str (top level), category_path: str ("A > B > C"),
#   genres: str ("|"-joined), brand: str, price: float64 (list price), year: Int64,
#   created_at: datetime64[ns, UTC] (when the item entered the catalogue)
ITEM_COLUMNS = ("item_id",)
ITEM_OPTIONAL = (
    "title",
    "description",
    "category",
    "category_path",
    "genres",
    "brand",
    "price",
    "year",
    "created_at",
)
CATEGORY_SEPARATOR = " > "

# users.parquet: user_id plus signup_time: datetime64[ns, UTC], region: str, and whatever else the source has
# (e.g. age, gender, occupation). Direct personal data (e-mail, phone, name, address) is dropped at ingestion.
USER_COLUMNS = ("user_id",)
USER_OPTIONAL = ("signup_time", "region")

# reviews.parquet: user_id: str, item_id: str, rating: float64 (1..5), text: str, timestamp: datetime64[ns, UTC]
REVIEW_COLUMNS = ("user_id", "item_id", "rating", "text", "timestamp")

RATING_RANGE = (0.0, 10.0)  # widest rating scale accepted; ML-100k and reviews use 1..5
MIN_TIMESTAMP = "2000-01-01"  # events before this are rejected (ML-100k starts in 1997: see datasets.py)
MAX_PRICE = 1_000_000.0  # a unit price above this is absurd
MAX_QUANTITY = 1_000.0  # units per event
MAX_ID_CHARS = 256  # ids, event types and session ids longer than this are rejected
MAX_TEXT_CHARS = 100_000  # titles, descriptions, review texts


def table_file(table: str) -> str:
    return f"{table}.parquet"
