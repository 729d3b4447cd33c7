"""Assemble one shard's Arrow table from generations and recorded features (schema v1)."""

from __future__ import annotations

import numpy as np

from forelen.schema import features


def _float16_lists(arrays: list[np.ndarray]):
    import pyarrow as pa

    offsets = np.concatenate([[0], np.cumsum([len(a) for a in arrays])]).astype(np.int32)
    values = np.concatenate(arrays).astype(np.float16) if arrays else np.zeros(0, np.float16)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))


def _vectors(arrays: list[np.ndarray], dim: int):
    import pyarrow as pa

    values = np.stack(arrays).astype(np.float16).reshape(-1)
    return pa.FixedSizeListArray.from_arrays(pa.array(values), dim)


def _step_lists(arrays: list[np.ndarray], dim: int):
    """list<fixed_size_list<float16>[D]>: per sample, min(S, T) vectors."""
    import pyarrow as pa

    offsets = np.concatenate([[0], np.cumsum([a.shape[0] for a in arrays])]).astype(np.int32)
    flat = np.concatenate([a.reshape(-1) for a in arrays]).astype(np.float16)
    inner = pa.FixedSizeListArray.from_arrays(pa.array(flat), dim)
    return pa.ListArray.from_arrays(pa.array(offsets), inner)


def build_table(scalars: list[dict], recorded: list | None, hidden_size: int, layers: list[int],
                first_k: int | None = None):
    """`scalars`: identity and generation columns per row; `recorded`: matching `Recorded`s, or
    None for a text-only table (no feature columns)."""
    import pyarrow as pa

    with_features = recorded is not None
    schema = features(hidden_size, layers if with_features else [], first_k if with_features else
                      None, token_features=with_features).arrow_schema
    columns = {}
    for name in schema.names:
        if name == "prompt_entropy":
            columns[name] = _float16_lists([r.prompt_entropy for r in recorded])
        elif name == "response_entropy":
            columns[name] = _float16_lists([r.response_entropy for r in recorded])
        elif name.startswith("step_states_l"):
            columns[name] = _step_lists([r.step_states[name] for r in recorded], hidden_size)
        elif with_features and name in recorded[0].pooled:
            columns[name] = _vectors([r.pooled[name] for r in recorded], hidden_size)
        else:
            columns[name] = pa.array([row[name] for row in scalars], type=schema.field(name).type)
    return pa.Table.from_arrays([columns[n] for n in schema.names], schema=schema)


