"""The dataset row, schema v1 (docs/DESIGN.md section 5): column names, Arrow/HF features, version.

Feature columns are per recorded layer, named `<kind>_l<layer>`, where `layer` indexes hidden states
the way `model(..., output_hidden_states=True).hidden_states` does: 0 is the embedding output, L (the
number of decoder layers) is the final, normed state that feeds the LM head.

Alignment of token-level features (position-aligned with the hidden states they come from):
- `prompt_entropy[i]`: entropy (nats, temperature 1) of the next-token distribution at prompt
  position i; the last one is the distribution the first generated token was drawn from.
- `response_entropy[j]`: entropy at generated token j+1 (the distribution over token j+2, or EOS).
- `step_states_l<L>[j]`: hidden state at generated token j+1, for j < min(S, output_tokens).
"""

from __future__ import annotations

from forelen.errors import ForelenError

SCHEMA_VERSION = 1
POOLINGS = ("egtp", "mean", "max", "last")

IDENTITY = ("uid", "group_id", "sample_index", "split", "source", "source_id", "partition")
GENERATION = (
    "model", "model_revision", "prompt", "prompt_tokens", "response", "response_token_ids",
    "output_tokens", "finish_reason", "temperature", "top_p", "max_new_tokens", "seed",
)
TOKEN_FEATURES = ("prompt_entropy", "response_entropy")
PARTITIONS = ("train", "validation", "test")


def feature_column(kind: str, layer: int) -> str:
    """Column name of a per-layer feature: `egtp_l30`, `step_states_l10`, ..."""
    return f"{kind}_l{layer}"


def first_k_column(k: int, layer: int) -> str:
    """EGTP over only the first k prompt tokens (the official script's variant)."""
    return f"egtp_first{k}_l{layer}"


def feature_columns(layers: list[int], first_k: int | None = None) -> list[str]:
    cols = [feature_column(k, layer) for layer in layers for k in POOLINGS]
    if first_k:
        cols += [first_k_column(first_k, layer) for layer in layers]
    return cols + [feature_column("step_states", layer) for layer in layers]


def column_names(layers: list[int], first_k: int | None = None,
                 token_features: bool = True) -> list[str]:
    """A config's columns; a text-only config (imported with --no-features) has no feature
    columns at all: no layers and no entropies."""
    tokens = list(TOKEN_FEATURES) if token_features else []
    return list(IDENTITY) + list(GENERATION) + tokens + feature_columns(layers, first_k)


def features(hidden_size: int, layers: list[int], first_k: int | None = None,
             token_features: bool = True):
    """HF `Features` of a config; vectors as fixed-length float16 lists, never `Array2D`."""
    from datasets import Features, List, Value

    vec = List(Value("float16"), length=hidden_size)
    spec = {
        "uid": Value("string"), "group_id": Value("string"), "sample_index": Value("int32"),
        "split": Value("string"), "source": Value("string"), "source_id": Value("string"),
        "partition": Value("string"),
        "model": Value("string"), "model_revision": Value("string"), "prompt": Value("string"),
        "prompt_tokens": Value("int32"), "response": Value("string"),
        "response_token_ids": List(Value("int32")), "output_tokens": Value("int32"),
        "finish_reason": Value("string"), "temperature": Value("float32"),
        "top_p": Value("float32"), "max_new_tokens": Value("int32"), "seed": Value("int64"),
    }
    if token_features:
        spec.update(prompt_entropy=List(Value("float16")), response_entropy=List(Value("float16")))
    for layer in layers:
        for kind in POOLINGS:
            spec[feature_column(kind, layer)] = vec
        spec[feature_column("step_states", layer)] = List(vec)
        if first_k:
            spec[first_k_column(first_k, layer)] = vec
    return Features(spec)


def resolve_layer(layer, layers: list[int]) -> int:
    """`final`: the deepest recorded layer; `mid`: the shallowest (about a third of the depth)."""
    if layer == "final":
        return max(layers)
    if layer == "mid":
        return min(layers)
    if int(layer) not in layers:
        raise ForelenError(f"layer {layer} was not recorded; recorded layers: {layers}")
    return int(layer)
