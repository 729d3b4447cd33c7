"""Teacher-forced feature recorder: one forward pass over prompt+response per sample (batched).

Forward hooks capture the recorded layers; exact full-vocabulary entropies come from the LM head
applied in chunks of positions, so no (tokens x vocab) logits tensor is ever materialised whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from forelen.builders.engines.entropy import entropy_kernel
from forelen.schema import first_k_column

# Tokens (padded) a recorder forward takes at once. Measured on 64 rows of 246 tokens on average
# (2-core AMX Xeon, SmolLM2 bf16): 8192 -> 899, 4096 -> 1091, 2048 -> 1060, 1024 -> 942 tok/s.
BATCH_TOKENS = 4096
FP16_MAX = 65504.0  # residual streams can carry outliers; clamp instead of storing inf


def default_layers(num_layers: int) -> list[int]:
    """The final layer and one at about a third of the depth (TRAIL's choice of layer)."""
    return sorted({max(1, round(num_layers / 3)), num_layers})


def _parts(model):
    """(decoder layers, final norm, lm head) of a decoder-only transformers model."""
    base = model.base_model
    layers = next((getattr(base, n) for n in ("layers", "h", "blocks") if hasattr(base, n)), None)
    norm = next((getattr(base, n) for n in ("norm", "ln_f", "final_layer_norm") if hasattr(base, n)),
                None)
    if layers is None or norm is None:
        raise ValueError(f"cannot find decoder layers / final norm in {type(model).__name__}")
    return layers, norm, model.get_output_embeddings()


@dataclass
class Recorded:
    """Features of one sample; arrays are float32 here and stored as float16."""

    prompt_entropy: np.ndarray  # (P,)
    response_entropy: np.ndarray  # (T,)
    pooled: dict[str, np.ndarray]  # "egtp_l30" -> (D,)
    step_states: dict[str, np.ndarray]  # "step_states_l30" -> (min(S, T), D)


class Recorder:
    def __init__(self, model, layers: Sequence[int] | None = None, steps: int = 64,
                 chunk_tokens: int = 512, batch_tokens: int = BATCH_TOKENS,
                 first_k: int | None = None):
        self.model = model
        self.num_layers = model.config.num_hidden_layers
        self.layers = list(layers) if layers else default_layers(self.num_layers)
        bad = [x for x in self.layers if not 0 <= x <= self.num_layers]
        if bad:
            raise ValueError(f"layers {bad} out of range 0..{self.num_layers}")
        self.steps, self.chunk_tokens, self.batch_tokens = steps, chunk_tokens, batch_tokens
        self.first_k = first_k

        # fused by torch.compile on CPU where it works (see entropy.py); recorded with the data
        self._entropy, self.entropy_kernel = entropy_kernel(model.config.vocab_size,
                                                            model.device.type)

    def record(self, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]]
               ) -> list[Recorded]:
        """Batches are formed by total length under a token budget (B * T_max <= batch_tokens)."""
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]) + len(responses[i]))
        out: dict[int, Recorded] = {}
        batch: list[int] = []
        for i in order + [None]:
            if batch and (i is None or (len(batch) + 1) * _len(prompts, responses, i) > self.batch_tokens):
                for j, rec in zip(batch, self._record_batch([prompts[j] for j in batch],
                                                            [responses[j] for j in batch])):
                    out[j] = rec
                batch = []
            if i is not None:
                batch.append(i)
        return [out[i] for i in range(len(prompts))]

    def _record_batch(self, prompts, responses) -> list[Recorded]:
        import torch

        lengths = [len(p) + len(r) for p, r in zip(prompts, responses)]
        width = max(lengths)
        device = self.model.device
        ids = torch.zeros((len(lengths), width), dtype=torch.long)  # (B, T) right-padded
        mask = torch.zeros_like(ids)
        for row, (p, r) in enumerate(zip(prompts, responses)):
            ids[row, : lengths[row]] = torch.tensor(list(p) + list(r))
            mask[row, : lengths[row]] = 1
        states, final = self._forward(ids.to(device), mask.to(device))  # layer -> (B, T, D)
        entropies = self._entropies(final, lengths)  # per row: (T_row,)
        return [self._features(row, len(p), len(r), states, entropies[row])
                for row, (p, r) in enumerate(zip(prompts, responses))]

    def _forward(self, ids, mask):
        """Hidden states of the recorded layers, and the final normed state, for a padded batch."""
        import torch

        layers, norm, _ = _parts(self.model)
        captured: dict[int, "torch.Tensor"] = {}

        def hook(index):
            def fn(_module, _inputs, output):
                captured[index] = output[0] if isinstance(output, tuple) else output
            return fn

        handles = [norm.register_forward_hook(hook(self.num_layers))]
        handles += [layers[x - 1].register_forward_hook(hook(x)) for x in self.layers
                    if 0 < x < self.num_layers]
        if 0 in self.layers:
            handles.append(self.model.get_input_embeddings().register_forward_hook(hook(0)))
        try:
            with torch.inference_mode():
                self.model.base_model(input_ids=ids, attention_mask=mask, use_cache=False)
        finally:
            for h in handles:
                h.remove()
        return {x: captured[x] for x in self.layers}, captured[self.num_layers]

    def _entropies(self, final, lengths: list[int]) -> list[np.ndarray]:
        """Exact entropy of softmax(lm_head(h)) at every real position, `chunk_tokens` at a time."""
        import torch

        head = self.model.get_output_embeddings()
        flat = torch.cat([final[row, :n] for row, n in enumerate(lengths)])  # (N, D)
        parts = []
        with torch.inference_mode():
            for start in range(0, flat.shape[0], self.chunk_tokens):
                parts.append(self._entropy(head(flat[start: start + self.chunk_tokens])))
        ent = torch.cat(parts).cpu().numpy()
        return np.split(ent, np.cumsum(lengths)[:-1])

    def _features(self, row: int, p: int, t: int, states: dict, entropy: np.ndarray) -> Recorded:
        prompt_states = {layer: tensor[row, :p].float() for layer, tensor in states.items()}
        steps = {f"step_states_l{layer}": fp16_safe(tensor[row, p: p + min(self.steps, t)].float())
                 for layer, tensor in states.items()}
        return Recorded(entropy[:p].copy(), entropy[p: p + t].copy(),
                        pool_prompt(prompt_states, entropy[:p], self.first_k), steps)


def pool_prompt(states: dict, entropy: np.ndarray, first_k: int | None = None) -> dict[str, np.ndarray]:
    """Pooled prompt vectors per layer from its (P, D) float32 states and the (P,) prompt entropies.

    EGTP (the paper's eq. for h): softmax over the prompt tokens' entropies weights their states;
    mean, max and last are the pooling ablation. Shared by the recorder and the `hf` engine.
    """
    import torch

    h_ent = torch.from_numpy(np.ascontiguousarray(entropy, dtype=np.float32))
    weights = torch.softmax(h_ent, dim=0)  # (P,)
    pooled = {}
    for layer, h in states.items():  # h: (P, D)
        weighted = (weights.to(h.device)[:, None] * h).sum(dim=0)
        for kind, vec in (("egtp", weighted), ("mean", h.mean(dim=0)),
                          ("max", h.max(dim=0).values), ("last", h[-1])):
            pooled[f"{kind}_l{layer}"] = fp16_safe(vec)
        if first_k:
            k = min(first_k, h.shape[0])
            w = torch.softmax(h_ent[:k], dim=0).to(h.device)
            pooled[first_k_column(first_k, layer)] = fp16_safe((w[:, None] * h[:k]).sum(0))
    return pooled


def _len(prompts, responses, i) -> int:
    return len(prompts[i]) + len(responses[i])


def fp16_safe(t) -> np.ndarray:
    return t.clamp(-FP16_MAX, FP16_MAX).cpu().numpy()
