"""The recommendation endpoint's parameters: one table that both documents them (OpenAPI) and checks them.

FastAPI's per-parameter validation costs ~25 µs a parameter, more than all of a request's own work, so the
hot endpoint parses its query string here with the same rules the published schema states (bounds, types,
repeatable ``category``, unknown names refused) and the same one-line 422 messages.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import QueryParams

MAX_K = 100
MAX_CATEGORIES = 20
MAX_ID_CHARS = 256
ID_PATTERN = r"^[A-Za-z0-9_.:@+\-]{1,256}$"  # ASCII letters, digits and _ . : @ + - (no spaces or slashes)
_ID = re.compile(ID_PATTERN)
_TRUE = frozenset({"true", "1", "yes", "on", "t", "y"})
_FALSE = frozenset({"false", "0", "no", "off", "f", "n"})


class QueryError(ValueError):
    """An invalid parameter; the message names it (``query.k: ...``)."""


@dataclass(frozen=True)
class RecommendQuery:
    k: int = 10
    categories: frozenset[str] = frozenset()
    min_price: float | None = None
    max_price: float | None = None
    exclude_purchased: bool = True
    in_stock: bool = True
    diversity: float = 0.0
    explain: bool = True


# name -> (OpenAPI schema, description)
PARAMETERS: dict[str, tuple[dict[str, Any], str]] = {
    "k": ({"type": "integer", "minimum": 1, "maximum": MAX_K, "default": 10}, "How many items to return"),
    "category": (
        {"type": "array", "items": {"type": "string", "maxLength": MAX_ID_CHARS}, "maxItems": MAX_CATEGORIES},
        "Only these categories (repeatable)",
    ),
    "min_price": ({"type": "number", "minimum": 0}, "Lowest price (items without a price are left out)"),
    "max_price": ({"type": "number", "minimum": 0}, "Highest price (items without a price are left out)"),
    "exclude_purchased": ({"type": "boolean", "default": True}, "Hide items the user bought or dismissed"),
    "in_stock": ({"type": "boolean", "default": True}, "Hide items the rules mark out of stock"),
    "diversity": (
        {"type": "number", "minimum": 0, "maximum": 1, "default": 0},
        "Maximal-marginal-relevance strength over categories (0 keeps the model's ranking)",
    ),
    "explain": ({"type": "boolean", "default": True}, "Add an explanation per item"),
}
ALLOWED = frozenset(PARAMETERS)


def openapi_parameters() -> list[dict[str, Any]]:
    """The endpoint's parameters as OpenAPI objects (the path's ``user_id`` first)."""
    user = {"type": "string", "pattern": ID_PATTERN, "maxLength": MAX_ID_CHARS}
    out = [
        {"name": "user_id", "in": "path", "required": True, "schema": user, "description": "The shop's id"}
    ]
    for name, (schema, description) in PARAMETERS.items():
        param = {"name": name, "in": "query", "required": False, "schema": schema, "description": description}
        if schema["type"] == "array":
            param |= {"style": "form", "explode": True}
        out.append(param)
    return out


def check_user_id(user_id: str) -> str:
    if not _ID.match(user_id):
        raise QueryError("path.user_id: must be 1-256 characters from ASCII letters, digits and _ . : @ + -")
    return user_id


def parse_query(params: QueryParams) -> RecommendQuery:
    """A ``RecommendQuery`` from the query string, or ``QueryError`` naming the first bad parameter."""
    if not params:
        return _DEFAULT
    unknown = params.keys() - ALLOWED
    if unknown:
        raise QueryError(
            f"unknown query parameter {sorted(unknown)[0]!r}; allowed: {', '.join(sorted(ALLOWED))}"
        )
    get = params.get
    k = _integer("k", get("k"), 10, 1, MAX_K)
    categories = params.getlist("category")
    if len(categories) > MAX_CATEGORIES:
        raise QueryError(f"query.category: at most {MAX_CATEGORIES} categories")
    if any(len(c) > MAX_ID_CHARS for c in categories):
        raise QueryError(f"query.category: a category has more than {MAX_ID_CHARS} characters")
    min_price = _number("min_price", get("min_price"), None, 0.0, None)
    max_price = _number("max_price", get("max_price"), None, 0.0, None)
    if min_price is not None and max_price is not None and min_price > max_price:
        raise QueryError(f"min_price {min_price} is above max_price {max_price}")
    return RecommendQuery(
        k=k,
        categories=frozenset(categories),
        min_price=min_price,
        max_price=max_price,
        exclude_purchased=_boolean("exclude_purchased", get("exclude_purchased"), True),
        in_stock=_boolean("in_stock", get("in_stock"), True),
        diversity=_number("diversity", get("diversity"), 0.0, 0.0, 1.0),  # type: ignore[arg-type]
        explain=_boolean("explain", get("explain"), True),
    )


_DEFAULT = RecommendQuery()


def _integer(name: str, raw: str | None, default: int, low: int, high: int) -> int:
    if raw is None:
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise QueryError(f"query.{name}: Input should be a valid integer, got {raw[:40]!r}") from None
    if not low <= value <= high:
        raise QueryError(f"query.{name}: Input should be between {low} and {high}, got {value}")
    return value


def _number(
    name: str, raw: str | None, default: float | None, low: float, high: float | None
) -> float | None:
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise QueryError(f"query.{name}: Input should be a valid number, got {raw[:40]!r}") from None
    if not math.isfinite(value):
        raise QueryError(f"query.{name}: Input should be a finite number")
    if value < low or (high is not None and value > high):
        bound = f"between {low:g} and {high:g}" if high is not None else f"at least {low:g}"
        raise QueryError(f"query.{name}: Input should be {bound}, got {value:g}")
    return value


def _boolean(name: str, raw: str | None, default: bool) -> bool:
    if raw is None:
        return default
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise QueryError(f"query.{name}: Input should be a valid boolean (true/false), got {raw[:40]!r}")
