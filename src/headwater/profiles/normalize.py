"""Normalization of identifiers and attributes before matching.

- email: trimmed and lower-cased; a value without ``@`` is not an email (dropped);
- phone: E.164 (``+447700900123``) with ``phonenumbers``; numbers without a country
  code are read in the configured default region; impossible numbers are dropped;
- any other identifier kind (loyalty, passport, ...): upper-cased, without spaces,
  dashes, dots and slashes;
- attributes: NFKC, lower-cased, inner whitespace collapsed; empty → None.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

import phonenumbers

_SEPARATORS = re.compile(r"[\s\-./]+")
_SPACES = re.compile(r"\s+")


def normalize_identifier(kind: str, value: Any, region: str = "US") -> str | None:
    """The normalized form of an identifier value, or None when it is not one."""
    if value is None:
        return None
    text = unicodedata.normalize("NFKC", str(value)).strip()
    if not text:
        return None
    if kind == "email":
        text = text.lower()
        return text if "@" in text.strip("@") else None
    if kind == "phone":
        try:
            num = phonenumbers.parse(text, None if text.startswith("+") else region)
        except phonenumbers.NumberParseException:
            return None
        if not phonenumbers.is_possible_number(num):
            return None
        return phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)
    out = _SEPARATORS.sub("", text).upper()
    return out or None


def normalize_attribute(value: Any) -> str | None:
    """The form attributes are compared in (None for empty)."""
    if value is None:
        return None
    text = _SPACES.sub(" ", unicodedata.normalize("NFKC", str(value)).lower()).strip()
    return text or None


def lookup_candidates(ref: str, region: str = "US") -> list[str]:
    """The forms a free-text reference may take as a stored identifier value."""
    out = [ref, ref.strip()]
    for kind in ("email", "phone", "other"):
        v = normalize_identifier(kind, ref, region)
        if v is not None:
            out.append(v)
    return list(dict.fromkeys(out))
