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


def sample_row(*, uid: str, group_id: str, sample_index: int, split: str, source: str,
               source_id: str, partition: str, resolved: dict, prompt: str, prompt_ids,
               response: str, response_ids, output_tokens: int, finish_reason: str,
               temperature: float | None = None, top_p: float | None = None,
               max_new_tokens: int | None = None, seed: int | None = None) -> dict:
    """One row's identity and generation columns, as a build and an import write them (the
    sampling settings are None for an import: the log does not say how it was sampled)."""
    return {"uid": uid, "group_id": group_id, "sample_index": sample_index, "split": split,
            "source": source, "source_id": source_id, "partition": partition,
            "model": resolved["model_location"], "model_revision": resolved["model_revision"],
            "prompt": prompt, "prompt_tokens": len(prompt_ids), "response": response,
            "response_token_ids": None if response_ids is None else list(response_ids),
            "output_tokens": output_tokens, "finish_reason": finish_reason,
            "temperature": temperature, "top_p": top_p, "max_new_tokens": max_new_tokens,
            "seed": seed}


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


