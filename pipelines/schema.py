"""The canonical tables every source is ingested into (Parquet, one file per table)."""

from __future__ import annotations

INTERACTIONS = "interactions"
ITEMS = "items"
USERS = "users"
TABLES = (INTERACTIONS, ITEMS, USERS)

EVENT_TYPES = ("view", "click", "cart", "purchase", "rating")

# interactions.parquet
#   user_id: str, item_id: str        -- ids are always strings
#   rating: float64 (nullable)        -- explicit rating when the source has one
#   timestamp: datetime64[ns, UTC]
#   event_type: str in EVENT_TYPES
#   session_id: str (nullable)        -- order/basket/session the event belongs to
#   source_row: int64                 -- 1-based data row in the source file (header excluded)
INTERACTION_COLUMNS = ("user_id", "item_id", "rating", "timestamp", "event_type", "session_id", "source_row")

# items.parquet: item_id plus whatever the source has, among
#   title: str, genres: str ("|"-joined), category: str (first genre / aisle), year: Int64, price: float64
ITEM_COLUMNS = ("item_id",)
ITEM_OPTIONAL = ("title", "genres", "category", "year", "price", "brand")

# users.parquet: user_id plus whatever the source has (e.g. age, gender, occupation, zip_code)
USER_COLUMNS = ("user_id",)

RATING_RANGE = (0.0, 10.0)  # widest rating scale accepted; ML-100k uses 1..5
MIN_TIMESTAMP = "1990-01-01"


def table_file(table: str) -> str:
    return f"{table}.parquet"
