"""Arrow list columns as numpy: one array per row, in the column's own dtype (float16 stays
float16). Shared by the feature tables and the compact form."""

from __future__ import annotations

import numpy as np


def ragged(chunked, depth_dim: int | None = None) -> np.ndarray:
    """list<...> Arrow column -> object array of numpy arrays, one per row, dtype preserved."""
    arr = chunked.combine_chunks()
    offsets = arr.offsets.to_numpy()
    values = arr.values
    if depth_dim is not None:  # list<fixed_size_list<float16>[D]>
        flat = values.flatten().to_numpy(zero_copy_only=False).reshape(-1, depth_dim)
    else:
        flat = values.to_numpy(zero_copy_only=False)
    out = np.empty(len(arr), dtype=object)
    for i in range(len(arr)):
        out[i] = flat[offsets[i]: offsets[i + 1]]
    return out
