"""Feature tables: a built config's columns as numpy arrays, one row per sample.

Scalars are (N,) arrays, pooled vectors (N, D) float16 (read through Arrow, never upcast on load),
token-level columns (`prompt_entropy`, `response_entropy`, `step_states_l<l>`) object arrays of
per-row arrays. A predictor receives a table holding only the columns it declares.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Iterable

import numpy as np

from forelen.columns import ragged
from forelen.compact import assemble
from forelen.errors import ForelenError

LAYER_RE = re.compile(r"^(?:egtp|mean|max|last|step_states)_l(\d+)$")


class FeatureTable(Mapping):
    def __init__(self, columns: dict[str, np.ndarray], meta: dict | None = None):
        lengths = {len(v) for v in columns.values()}
        if len(lengths) > 1:
            raise ValueError(f"columns of unequal length: {lengths}")
        self._cols = dict(columns)
        self.meta = dict(meta or {})  # e.g. recorded layers, hidden size, config name
        self.n = lengths.pop() if lengths else 0

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            return self._cols[name]
        except KeyError:
            raise KeyError(f"column {name!r} not in this table (has: {', '.join(self._cols)})") from None

    def __iter__(self):
        return iter(self._cols)

    def __len__(self) -> int:
        return len(self._cols)

    def __repr__(self) -> str:
        return f"FeatureTable(n={self.n}, columns={list(self._cols)})"

    def select(self, names: Iterable[str]) -> "FeatureTable":
        names = list(names)
        missing = [c for c in names if c not in self._cols]
        if missing:
            raise ForelenError(f"the table lacks column(s) {', '.join(missing)}; "
                               f"available: {', '.join(self._cols)}")
        return FeatureTable({c: self._cols[c] for c in names}, self.meta)

    def take(self, index) -> "FeatureTable":
        index = np.asarray(index)
        return FeatureTable({k: v[index] for k, v in self._cols.items()}, self.meta)

    def layers(self) -> list[int]:
        return sorted({int(m.group(1)) for c in self._cols if (m := LAYER_RE.match(c))}
                      | set(self.meta.get("recorded_layers", [])))


def from_arrow(table, meta: dict | None = None) -> FeatureTable:
    """Convert an Arrow table of schema v1 rows into a FeatureTable (float16 stays float16)."""
    import pyarrow as pa

    cols = {}
    for name in table.column_names:
        col = table[name]
        typ = col.type
        if pa.types.is_fixed_size_list(typ):
            cols[name] = col.combine_chunks().flatten().to_numpy(
                zero_copy_only=False).reshape(len(col), typ.list_size)
        elif pa.types.is_list(typ):
            inner = typ.value_type
            dim = inner.list_size if pa.types.is_fixed_size_list(inner) else None
            cols[name] = ragged(col, dim)
        else:
            cols[name] = col.to_numpy(zero_copy_only=False)
    if any(n.startswith("step_held_l") for n in cols):  # a compact config (src/forelen/compact.py)
        cols = assemble(cols)
    return FeatureTable(cols, meta)
