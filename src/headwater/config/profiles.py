"""The ``[profiles]`` section: how captured tables map onto persons.

Example (headwater.toml)::

    [profiles]
    default_region = "GB"          # phone numbers without a country code
    threshold = 0.95               # match probability for a probabilistic link
    blocking = [["surname"], ["date_of_birth"], ["given_name", "postcode"]]

    [profiles.comparisons.surname]
    method = "jaro_winkler"        # exact | jaro_winkler | levenshtein | token_set
    levels = [0.92, 0.8]           # similarity thresholds below "exact"

    [[profiles.tables]]
    source = "crm"
    table = "customers"            # as in the source's `tables`
    trust = 3                      # survivorship: higher wins, then the most recent
    identifiers = { email = "email", mobile = "phone", loyalty_no = "loyalty" }
    attributes = { first_name = "given_name", last_name = "surname", dob = "date_of_birth" }

    [[profiles.facts]]
    name = "bookings"
    source = "res"
    table = "bookings"
    link_column = "customer_id"    # references a mapped table's key ...
    link_table = "crm.customers"   # ... (source.table), or: link_identifier = "email"
    date_column = "departs_on"
    amount_column = "amount"

Each mapped table and fact table gets a derived ``profiles`` pipeline on its CDC topic;
all of them update one identity graph, serialised by an advisory lock
(:mod:`headwater.profiles.processor`).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_ATTR = r"^[a-z][a-z0-9_]{0,62}$"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


class Comparison(_Model):
    """How one attribute is compared: levels exact > each threshold > else; a null on
    either side is its own level with weight 0."""

    method: Literal["exact", "jaro_winkler", "levenshtein", "token_set"] = "jaro_winkler"
    levels: tuple[float, ...] = (0.92, 0.8)

    @field_validator("levels")
    @classmethod
    def _descending(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0 < x < 1 for x in v) or list(v) != sorted(v, reverse=True):
            raise ValueError("levels must be similarities in (0, 1), highest first")
        return v


class MappedTable(_Model):
    """A captured table whose rows are records of persons."""

    source: str = Field(pattern=r"^[a-z][a-z0-9_.-]{0,62}$")
    table: str
    topic: str | None = None
    """The CDC topic; default: the source's topic of ``table``."""
    trust: int = Field(1, ge=0, le=1000)
    identifiers: dict[str, str] = Field(default_factory=dict)
    """column → identifier kind (email, phone, loyalty, passport, ...)."""
    attributes: dict[str, str] = Field(default_factory=dict)
    """column → attribute name (given_name, surname, date_of_birth, address, ...)."""

    @model_validator(mode="after")
    def _columns(self) -> MappedTable:
        for col, name in (*self.identifiers.items(), *self.attributes.items()):
            if not _IDENT.match(col) or not re.match(_ATTR, name):
                raise ValueError(f"bad column {col!r} or name {name!r}")
        if not self.identifiers and not self.attributes:
            raise ValueError("map at least one identifier or attribute column")
        return self

    @property
    def name(self) -> str:
        """``<source>:<table>``, the prefix of its record ids (``crm:customers:42``)."""
        return f"{self.source}:{self.table.rsplit('.', 1)[-1]}"


class FactTable(_Model):
    """A captured table whose rows are facts about a person (bookings, payments, ...)."""

    name: str = Field(pattern=_ATTR)
    source: str = Field(pattern=r"^[a-z][a-z0-9_.-]{0,62}$")
    table: str
    topic: str | None = None
    link_column: str
    link_table: str | None = None
    """``source.table`` of a mapped table whose key ``link_column`` holds."""
    link_identifier: str | None = None
    """Or: the identifier kind ``link_column`` holds (email, loyalty, ...)."""
    date_column: str | None = None
    amount_column: str | None = None

    @model_validator(mode="after")
    def _one_link(self) -> FactTable:
        if (self.link_table is None) == (self.link_identifier is None):
            raise ValueError("set exactly one of link_table or link_identifier")
        return self


class ProfilesConfig(_Model):
    default_region: str = Field("US", pattern=r"^[A-Z]{2}$")
    threshold: float = Field(0.95, gt=0, lt=1)
    """Match probability from which two records are linked probabilistically."""
    blocking: tuple[tuple[str, ...], ...] = ()
    """Candidate pairs share all attributes of at least one rule (near-linear work)."""
    comparisons: dict[str, Comparison] = Field(default_factory=dict)
    survivorship: Literal["trusted", "recent"] = "trusted"
    """trusted: the most trusted source's value, then the most recent; recent: the
    most recent value, then trust."""
    tables: tuple[MappedTable, ...] = Field(default=(), min_length=1)
    facts: tuple[FactTable, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> ProfilesConfig:
        attrs = {a for t in self.tables for a in t.attributes.values()}
        for rule in self.blocking:
            bad = [a for a in rule if a not in attrs]
            if bad or not rule:
                raise ValueError(f"blocking rule {list(rule)}: unknown attribute(s) {bad}")
        bad = sorted(set(self.comparisons) - attrs)
        if bad:
            raise ValueError(f"comparisons: no mapped table has attribute(s) {bad}")
        names = {f"{t.source}.{t.table.rsplit('.', 1)[-1]}" for t in self.tables}
        for f in self.facts:
            if f.link_table is not None and f.link_table not in names:
                raise ValueError(
                    f"facts.{f.name}.link_table {f.link_table!r}: not a mapped table;"
                    f" valid: {sorted(names)}"
                )
        return self

    def table_by_name(self, name: str) -> MappedTable:
        """The mapped table called ``source.table`` (or ``source:table``)."""
        for t in self.tables:
            if t.name == name.replace(".", ":", 1):
                return t
        raise KeyError(name)


class ProfilesPipeline(_Model):
    """A derived pipeline: one per mapped or fact table, all updating one graph."""

    processor: Literal["profiles"]
    name: str
    input: str
    processes: int | None = None
    batch_max_events: int | None = None
    batch_max_ms: int | None = None
    profiles: ProfilesConfig
