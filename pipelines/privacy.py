"""Privacy at the gate: user ids become keyed hashes, direct personal data columns are dropped.

Pseudonyms are ``HMAC-SHA256(key, raw id)`` cut to 16 hex characters (64 bits: a collision among 10M users
has odds of about 3e-6). The key comes from ``FUSIONREC_PSEUDONYM_KEY``; when that is unset a per-machine key
is created once in the user's config folder (never inside a FusionRec home, never logged), so a laptop run
works out of the box and keeps the same pseudonyms from run to run. Production sets the variable from a
secret store. Serving applies the same function to the user id of each request.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import os
import re
import secrets
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)

KEY_ENV = "FUSIONREC_PSEUDONYM_KEY"
KEY_FILE_ENV = "FUSIONREC_PSEUDONYM_KEY_FILE"  # where the fallback key lives (default: ~/.config/fusionrec)
PSEUDONYM_CHARS = 16

# Column names that hold direct personal data (matched on the name with separators and case removed).
_PERSONAL = re.compile(
    r"^(e?mail|emailaddress|phone|phonenumber|mobile|telephone|tel|fax|name|firstname|lastname|fullname|"
    r"surname|givenname|username|address|streetaddress|street|homeaddress|postaladdress|billingaddress|"
    r"shippingaddress|zip|zipcode|postcode|postalcode|ssn|passport|iban|creditcard|cardnumber|ip|ipaddress)$"
)


class PrivacyError(RuntimeError):
    """The pseudonymisation key is unusable; the message says which setting to fix (never the key)."""


def personal_columns(columns: Iterable[str]) -> list[str]:
    """The columns among ``columns`` that hold direct personal data (e-mail, phone, name, address, ...)."""
    return [c for c in columns if _PERSONAL.match(re.sub(r"[^a-z]", "", str(c).lower()))]


def _key_file() -> Path:
    if explicit := os.environ.get(KEY_FILE_ENV):
        return Path(explicit).expanduser()
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return config / "fusionrec" / "pseudonym.key"


def pseudonym_key() -> bytes:
    """The HMAC key: ``FUSIONREC_PSEUDONYM_KEY``, else the per-machine key file (created on first use)."""
    return _key(os.environ.get(KEY_ENV), _key_file())


@functools.lru_cache(maxsize=4)
def _key(value: str | None, path: Path) -> bytes:
    if value:
        if len(value) < 16:
            raise PrivacyError(f"{KEY_ENV} is too short: use at least 16 characters of a random secret")
        return value.encode()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
        log.warning("%s is not set: created a per-machine pseudonymisation key in %s", KEY_ENV, path)
    return path.read_text().strip().encode()


def pseudonymise_one(raw_id: str, key: bytes | None = None) -> str:
    """The pseudonym of one user id (what serving does with the id of a request)."""
    digest = hmac.new(key or pseudonym_key(), str(raw_id).encode(), hashlib.sha256).hexdigest()
    return digest[:PSEUDONYM_CHARS]


def pseudonymise(ids: pd.Series, key: bytes | None = None) -> pd.Series:
    """Pseudonyms of a column of ids (nulls stay null); each distinct id is hashed once."""
    key = key or pseudonym_key()
    codes, uniques = pd.factorize(ids, use_na_sentinel=True)
    hashed = pd.Series([pseudonymise_one(u, key) for u in uniques], dtype=object)
    out = hashed.reindex(codes).to_numpy()
    return pd.Series(out, index=ids.index, dtype=object).where(codes >= 0, None)


def stored_user_id(raw_id: str, enabled: bool) -> str:
    """The id a user has in data, features and the serving store: the pseudonym when ``enabled``."""
    return pseudonymise_one(raw_id) if enabled else raw_id
