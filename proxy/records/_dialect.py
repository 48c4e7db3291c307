"""The few SQL spellings that differ between the stores' backends.

Queries are written once, in the portable subset of SQL both SQLite and PostgreSQL run (`?`
placeholders, which the PostgreSQL store numbers; CASE instead of boolean arithmetic; no bare
columns beside aggregates), and take the rest from the store's `dialect`:
JSON access, table-valued JSON arrays, the insertion order, and integer bucketing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

__all__ = ["POSTGRES", "SQLITE", "Dialect"]


@dataclasses.dataclass(frozen=True, slots=True)
class Dialect:
    name: str

    @property
    def seq(self) -> str:
        """The column that orders rows by insertion (a worker's cursor)."""
        return "rowid" if self.name == "sqlite" else "seq"

    def json_number(self, column: str, key: str) -> str:
        """A number inside a JSON object column (NULL when absent)."""
        if self.name == "sqlite":
            return f"json_extract({column}, '$.{key}')"
        return f"(({column})->>'{key}')::double precision"

    def json_item(self, column: str, index: int) -> str:
        """Item `index` of a JSON array value, as text (NULL when absent or null)."""
        if self.name == "sqlite":
            return f"json_extract({column}, '$[{index}]')"
        return f"(({column})->>{index})"

    def json_elements(self, column: str) -> str:
        """A table of the elements of a JSON array column, one row each, in a column `value`."""
        return f"json_each({column})" if self.name == "sqlite" else f"jsonb_array_elements({column})"

    def json_fields(self, column: str, keys: Sequence[str]) -> str:
        """A JSON array (as text) of the values of `keys` in a JSON object column, in that order."""
        if self.name == "sqlite":
            return f"json_extract({column}, " + ", ".join(f"'$.{k}'" for k in keys) + ")"
        return "jsonb_build_array(" + ", ".join(f"({column})->'{k}'" for k in keys) + ")::text"

    def temp(self, table: str) -> str:
        """A temp table's qualified name."""
        return f"temp.{table}" if self.name == "sqlite" else f"pg_temp.{table}"

    def temp_index(self, name: str, table: str, columns: str) -> str:
        """CREATE INDEX on a temp table (SQLite names the index's schema; PostgreSQL must not)."""
        if self.name == "sqlite":
            return f"CREATE INDEX temp.{name} ON {table} ({columns})"
        return f"CREATE INDEX {name} ON {table} ({columns})"

    def indexed_by(self, index: str) -> str:
        """After a table in FROM: use this index (SQLite's planner, without statistics, may pick an index
        that fetches every whole row; PostgreSQL's chooses by its statistics and has no such clause)."""
        return f" INDEXED BY {index}" if self.name == "sqlite" else ""

    def bucket(self, expr: str) -> str:
        """floor() of a non-negative number as an integer (SQLite's CAST truncates; PostgreSQL's rounds)."""
        return f"CAST({expr} AS INTEGER)" if self.name == "sqlite" else f"floor({expr})::bigint"


SQLITE = Dialect("sqlite")
POSTGRES = Dialect("postgresql")
