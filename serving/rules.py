"""Merchandising rules a shop manager sets without a retrain.

A YAML (or JSON) document, e.g.::

    pins:                       # item on a fixed 1-based slot of every list it may appear in
      - {item: "42", slot: 1}
    boosts:                     # multiply the score of a category's / brand's items (>1 boost, <1 bury)
      - {category: "Toys", factor: 1.5}
      - {brand: "Acme", factor: 0.5}
    blocked:                    # never shown (recalled, legal, ...)
      - {item: "13", reason: "recalled"}
    out_of_stock: ["7", "8"]    # hidden when the request asks for in-stock items (the default)
    repeats: false              # true: already bought / dismissed items may come back (e.g. groceries)

The file lives at ``cfg.paths.merch_rules``; the API keeps the active rules in the serving store so every
replica applies the same ones (``PUT /admin/rules``, ``POST /admin/reload`` re-reads the file).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_SLOT = 100


class Pin(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item: str = Field(min_length=1, max_length=256)
    slot: int = Field(ge=1, le=MAX_SLOT, strict=True, description="1-based position")


class Boost(BaseModel):
    model_config = ConfigDict(extra="forbid")
    category: str | None = Field(default=None, min_length=1, max_length=256)
    brand: str | None = Field(default=None, min_length=1, max_length=256)
    factor: float = Field(gt=0, le=100, strict=True, description=">1 boosts, <1 buries")

    @model_validator(mode="after")
    def one_target(self) -> Boost:
        if (self.category is None) == (self.brand is None):
            raise ValueError("a boost names exactly one of category or brand")
        return self


class Block(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item: str = Field(min_length=1, max_length=256)
    reason: str = Field(default="", max_length=500)


class MerchRules(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pins: list[Pin] = Field(default_factory=list, max_length=100)
    boosts: list[Boost] = Field(default_factory=list, max_length=1000)
    blocked: list[Block] = Field(default_factory=list, max_length=100_000)
    out_of_stock: list[str] = Field(default_factory=list, max_length=100_000)
    repeats: bool = Field(default=False, strict=True)

    @model_validator(mode="after")
    def distinct_slots(self) -> MerchRules:
        slots = [p.slot for p in self.pins]
        if len(set(slots)) != len(slots):
            raise ValueError("two pins share a slot")
        return self

    def compiled(self) -> CompiledRules:
        return CompiledRules(self)


class CompiledRules:
    """Rules as the lookups a request needs (sets and dicts), built once per change."""

    def __init__(self, rules: MerchRules) -> None:
        self.rules = rules
        self.blocked = {b.item for b in rules.blocked}
        self.out_of_stock = set(rules.out_of_stock)
        self.category_factor = {b.category: b.factor for b in rules.boosts if b.category}
        self.brand_factor = {b.brand: b.factor for b in rules.boosts if b.brand}
        self.pins = sorted(((p.slot, p.item) for p in rules.pins), key=lambda p: p[0])
        self.repeats = rules.repeats


class RulesError(ValueError):
    """A rules file that cannot be used; the message names the file and the problem."""


def parse_rules(text: str, where: str = "rules") -> MerchRules:
    try:
        document = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        raise RulesError(f"{where}: not valid YAML/JSON: {exc}".splitlines()[0]) from exc
    if not isinstance(document, dict):
        raise RulesError(f"{where}: expected a mapping with pins/boosts/blocked/out_of_stock/repeats")
    try:
        return MerchRules.model_validate(document)
    except ValueError as exc:
        first = exc.errors()[0] if hasattr(exc, "errors") else {"loc": (), "msg": str(exc)}
        place = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise RulesError(f"{where}: {place}: {first['msg']}") from exc


def load_rules_file(path: Path) -> MerchRules:
    """The rules in ``path``; no file means no rules."""
    path = Path(path)
    if not path.exists():
        return MerchRules()
    return parse_rules(path.read_text(), where=str(path))


def dump_rules(rules: MerchRules) -> str:
    return json.dumps(rules.model_dump(exclude_defaults=False), sort_keys=True)


def save_rules_file(path: Path, rules: MerchRules) -> None:
    """Write ``rules`` as YAML, atomically (write a sibling, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(rules.model_dump(), sort_keys=False))
    tmp.replace(path)


def rules_from_json(value: str | None) -> MerchRules:
    return MerchRules() if not value else MerchRules.model_validate(json.loads(value))


def as_dict(rules: MerchRules) -> dict[str, Any]:
    return rules.model_dump()
