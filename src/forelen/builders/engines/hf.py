"""`hf` engine: continuous batching over the model's forward pass, features recorded as it goes.

A fixed number of slots share a pre-allocated KV cache (`engines/slots.py`). A row that ends frees
its slot at once and the next request, in plan order, is prefilled into it; the samples of one
prompt (an `rl` group) prefill it once and copy its cache. Prefill runs the prompt through the
model in pieces of `prefill_chunk` tokens, capturing the recorded layers and the exact entropy of
every prompt position (LM head in chunks); each decode step keeps the recorded layers' state of
the token it feeds (steps 1..S) and the entropy of the distribution it samples from, so no second
pass over prompt + response is needed. Alignment is schema v1's, identical to the teacher-forced
recorder's (`src/forelen/builders/recorder.py`); a row cut at `max_new_tokens` feeds its last token once more,
without sampling, to record that token's state and entropy.

Why a loop of our own rather than `generate` or `generate_batch`: `generate` keeps a static batch
running until its longest row ends and exposes neither per-step states of chosen rows nor prompt
states without materialising (tokens x vocab) logits; `generate_batch` (transformers' continuous
batching) neither records features nor shares a prefix, and ran 64 requests x 128 tokens at
58-74 tok/s on a 2-core machine without AMX (measured for this engine's issue). The model's
own modules do all the maths.

Exactness: a sample's tokens depend only on its seed and its own logits (`sample_seeded`); which
rows share a step never enters a row's computation except through floating-point blocking.
The build makes the schedule itself a function of the plan (work units, `src/forelen/builders/runner.py`), so a
resumed build repeats the very same computation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from forelen.builders.engines import (ENGINES, Engine, EngineInfo, Generation, GenerationRequest,
                                      HFSettings, slots)
from forelen.builders.engines.entropy import entropy, entropy_kernel
from forelen.builders.engines.sampling import eos_ids, sample_seeded
from forelen.builders.engines.scheduler import WaitQueue, compact_moves, resort_order
from forelen.builders.engines.slots import (ATTENTION_NAME, Plan, SlotCache, decoder_parts,
                                            slot_bytes_per_token)
from forelen.builders.recorder import Recorded, default_layers, fp16_safe, pool_prompt
from forelen.errors import ForelenError

ENTROPY_CHUNK = 128  # prompt positions per LM-head call: (128 x vocab) logits at most


@dataclass
class Prefix:
    """A prefilled prompt: its KV sits in the scratch slot."""

    ids: tuple[int, ...]
    last_logits: object  # (V,) float32: the first generated token's distribution
    prompt_entropy: np.ndarray | None = None  # (P,)
    pooled: dict = field(default_factory=dict)


@dataclass
class Row:
    index: int  # position in the request list
    request: GenerationRequest
    generator: object
    prefix: Prefix
    tokens: list[int]
    pos: int  # cache length = position of the next token fed
    final: bool = False  # cut at the budget: one more step records the last token's features
    done: str | None = None  # finish reason once ended


@dataclass
class Parked:
    """A request out of the slots (waiting for one, or preempted): its row, its KV copied out of
    the cache, and its recorded step states when it had decoded."""

    row: Row
    kv: list  # per layer (k, v), the row's first `row.pos` positions
    states: dict = field(default_factory=dict)


@ENGINES.register("hf")
class HFEngine(Engine):
    info = EngineInfo("hf", "continuous batching, slot KV cache, features recorded while "
                      "generating, per-sample seeds",
                      devices="cpu, cuda", requires="transformers, torch")
    # Sequences per `generate` call in a build: slots stay full across shard boundaries, and only
    # the end of a unit drains them. A resumed build repeats at most one unit's work.
    work_unit = 1024
    Settings = HFSettings

    @classmethod
    def create(cls, model, tokenizer, resolved_model, settings: HFSettings) -> "HFEngine":
        return cls(model, tokenizer, settings)

    def __init__(self, model, tokenizer, settings: HFSettings = HFSettings()):
        if settings.attention not in slots.KERNELS:
            raise ForelenError(f"unknown attention kernel {settings.attention!r}; known: "
                               + ", ".join(slots.KERNELS))
        self.model, self.settings = model, settings
        self.eos_ids = eos_ids(model, tokenizer)
        self._parts = decoder_parts(model)
        cfg = model.config
        self.num_layers = cfg.num_hidden_layers
        layers = sorted(settings.layers) if settings.layers else default_layers(self.num_layers)
        self.layers = layers if settings.record else []
        self.records_features = settings.record
        self.kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.cache = None
        self.timing = {"prefill_s": 0.0, "decode_s": 0.0, "feature_s": 0.0, "steps": 0}
        self._entropy, self.entropy_kernel = (
            entropy_kernel(cfg.vocab_size, model.device.type) if settings.record
            else (entropy, "eager"))
        slots.register()

    # ------------------------------------------------------------------ sizing

    def slot_count(self, max_prompt: int, max_new: int) -> int:
        """Slots that fit in the KV budget at a capacity of max_prompt + max_new tokens each."""
        s = self.settings
        per_token = slot_bytes_per_token(self.model, self.kv_heads, self.head_dim)
        per_slot = per_token * (max_prompt + max_new)
        fit = int(s.kv_budget_gib * 2**30 // per_slot) - 1  # one slot is the prefill scratch
        if fit < 1:
            raise ForelenError(
                f"--kv-budget-gib {s.kv_budget_gib:g} cannot hold one prompt of {max_prompt} "
                f"tokens plus {max_new} new tokens (one slot and the prefill slot need "
                f"{2 * per_slot / 2**30:.3f} GiB); raise --kv-budget-gib or lower --max-new-tokens / "
                "--max-prompt-tokens")
        return min(s.slots, fit)

    def resolved(self, settings: HFSettings, model=None) -> dict:
        """The slot count the KV budget allows (fixed for the build), the kernels, and features
        recorded in the generation pass: the manifest's `engine_settings`."""
        return {"slots": self.slot_count(settings.max_prompt_tokens, settings.max_new_tokens),
                "kv_budget_gib": settings.kv_budget_gib, "attention": settings.attention,
                "prefill_chunk": settings.prefill_chunk, "entropy": self.entropy_kernel,
                "features": "recorded during generation"}

    def feature_seconds(self) -> float:
        return float(self.timing["feature_s"])

    def setup(self, requests: Sequence[GenerationRequest]) -> None:
        import torch

        s = self.settings
        max_prompt = max(s.max_prompt_tokens, max(len(r.prompt_ids) for r in requests))
        max_new = max(s.max_new_tokens, max(r.max_new_tokens for r in requests))
        self.n_slots = self.slot_count(max_prompt, max_new)
        capacity = max_prompt + max_new
        device, dtype = self.model.device, self.model.dtype
        key = (self.n_slots, capacity)
        if self.cache is None or self._cache_key != key:
            self.cache = None  # free the old one first
            self.cache = SlotCache(self.num_layers, self.n_slots, self.kv_heads, capacity,
                                   self.head_dim, dtype, device)
            self._cache_key = key
        hidden = self.model.config.hidden_size
        steps = s.steps if s.record else 0
        self.ent = torch.zeros((self.n_slots, max_new), dtype=torch.float32)
        self.states = {x: torch.zeros((self.n_slots, steps, hidden), dtype=torch.float32)
                       for x in self.layers}
        self.rows: list[Row | None] = [None] * self.n_slots
        self.prefix: Prefix | None = None

    # ------------------------------------------------------------------ the loop

    def generate(self, requests: Sequence[GenerationRequest],
                 on_done: Callable[[Generation], None] | None = None) -> list[Generation] | None:
        """Slots are filled in plan order. With `on_done`, each result goes there as soon as it
        ends and none is kept (a work unit's step states would otherwise pile up: ~1.9 GB for a
        7B model), and None is returned; without, the results in request order."""
        import torch

        if not requests:
            return None if on_done else []
        self.setup(requests)
        queue = WaitQueue()  # plan order: the key is the request's index
        for i in range(len(requests)):
            queue.push(i, i, None)
        results: dict[int, Generation] = {}

        def emit(index: int, gen: Generation) -> None:
            if on_done:
                on_done(gen)
            else:
                results[index] = gen

        n = 0
        with self.slot_attention(), torch.inference_mode():
            while queue or n:
                while n < self.n_slots and self._fill(n, requests, queue, emit):
                    n += 1
                if not n:
                    continue
                self.step(n)
                for s in range(n):
                    row = self.rows[s]
                    if row.done:
                        emit(row.index, self._finish(s, row))
                        self.rows[s] = None
                        self._fill(s, requests, queue, emit)
                n = self.compact(n)
        return None if on_done else [results[i] for i in range(len(requests))]

    def _fill(self, s: int, requests, queue: WaitQueue, emit) -> bool:
        """Place the next request(s) into slot s until one occupies it; False if none is left."""
        while queue:
            _, i, _ = queue.pop()
            row = self._place(s, i, requests[i])
            if row.done:  # EOS as the first token: nothing to decode
                emit(i, self._finish(s, row))
                continue
            self.rows[s] = row
            return True
        return False

    def compact(self, n: int) -> int:
        """Keep the running rows in slots 0..n-1 (`scheduler.compact_moves`); the new n."""
        moves, n = compact_moves([row is not None for row in self.rows[:n]])
        for src, dst in moves:
            self._move(src, dst)
        return n

    def park(self, slot: int, row: Row, with_states: bool = False) -> Parked:
        """Copy a row's KV (and, `with_states`, its recorded step states) out of `slot`; the
        scratch slot after a prefill, or a running slot being preempted (swapped, never
        recomputed)."""
        length = row.pos
        kv = [(k[slot, :, :length].clone(), v[slot, :, :length].clone())
              for k, v in zip(self.cache.k, self.cache.v)]
        states = ({x: buf[slot].clone() for x, buf in self.states.items()} if with_states
                  else {})
        return Parked(row, kv, states)

    def unpark(self, slot: int, parked: Parked) -> None:
        """Put a parked request into `slot`: its KV, its step states, its row."""
        length = parked.row.pos
        for (k, v), (pk, pv) in zip(zip(self.cache.k, self.cache.v), parked.kv):
            k[slot, :, :length] = pk
            v[slot, :, :length] = pv
        for x, buf in self.states.items():
            if x in parked.states:
                buf[slot] = parked.states[x]
        self.rows[slot] = parked.row

    def _move(self, src: int, dst: int) -> None:
        row = self.rows[src]
        self.cache.copy_slot(src, dst, row.pos)
        self.ent[dst] = self.ent[src]
        for buf in self.states.values():
            buf[dst] = buf[src]
        self.rows[dst], self.rows[src] = row, None

    # ------------------------------------------------------------------ prefill

    def _place(self, s: int, index: int, req: GenerationRequest) -> Row:
        if self.prefix is None or self.prefix.ids != tuple(req.prompt_ids):
            self.prefix = self.prefill(tuple(req.prompt_ids))
        prompt_len = len(req.prompt_ids)
        if prompt_len + req.max_new_tokens > self.cache.capacity:
            raise ForelenError(f"request {req.uid}: {prompt_len} prompt + {req.max_new_tokens} new "
                               f"tokens exceed the slot capacity {self.cache.capacity}")
        self.cache.copy_slot(self.cache.scratch, s, prompt_len)
        return self.start(index, req, self.prefix)

    def start(self, index: int, req: GenerationRequest, prefix: Prefix) -> Row:
        """A request's row, its first token sampled from its prefill with its own seed."""
        import torch

        generator = torch.Generator().manual_seed(int(req.seed))
        first = int(sample_seeded(prefix.last_logits[None], [generator], req.temperature,
                                  req.top_p)[0])
        row = Row(index, req, generator, prefix, [], len(req.prompt_ids))
        self.append(row, first)
        return row

    def append(self, row: Row, token: int) -> None:
        if token in self.eos_ids:
            row.done = "stop"
        else:
            row.tokens.append(token)
            if len(row.tokens) >= row.request.max_new_tokens:
                # Recording: feed the last token once more for its state and entropy.
                row.final, row.done = (True, None) if self.records_features else (False, "length")

    def prefill(self, ids: tuple[int, ...]) -> Prefix:
        import torch

        t0 = time.perf_counter()
        chunk = self.settings.prefill_chunk
        pieces: dict[int, list] = {x: [] for x in self.layers}
        finals = []
        for start in range(0, len(ids), chunk):
            piece = torch.tensor([ids[start: start + chunk]], device=self.model.device)  # (1, c)
            positions = torch.arange(start, start + piece.shape[1], device=piece.device)[None]
            captured, final = self._forward(piece, positions, Plan(decode=False, start=start))
            for x in self.layers:
                pieces[x].append(captured[x][0])
            finals.append(final[0])  # (c, D)
        head = self.model.get_output_embeddings()
        last = head(finals[-1][-1:]).float()[0]  # (V,)
        t1 = time.perf_counter()
        prefix = Prefix(ids, last)
        if self.records_features:
            final = torch.cat(finals)  # (P, D)
            prefix.prompt_entropy = np.concatenate([
                self._entropy(head(final[i: i + ENTROPY_CHUNK]).float()).cpu().numpy()
                for i in range(0, final.shape[0], ENTROPY_CHUNK)])
            states = {x: torch.cat(pieces[x]).float() for x in self.layers}
            prefix.pooled = pool_prompt(states, prefix.prompt_entropy, self.settings.first_k)
        t2 = time.perf_counter()
        self.timing["prefill_s"] += t1 - t0
        self.timing["feature_s"] += t2 - t1
        return prefix

    # ------------------------------------------------------------------ decode

    def step(self, n: int) -> None:
        """One decode step of rows 0..n-1: feed each row's last token, record, sample."""
        import torch

        t0 = time.perf_counter()
        ranges = self._ranges(n)
        rows = self.rows[:n]
        device = self.model.device
        ids = torch.tensor([[r.tokens[-1]] for r in rows], device=device)  # (n, 1)
        positions = torch.tensor([r.pos for r in rows], device=device)  # (n,)
        plan = Plan.for_decode(positions, self.settings.attention, self.model.dtype, ranges)
        captured, final = self._forward(ids, positions[:, None], plan)
        logits = self.model.get_output_embeddings()(final[:, -1]).float()  # (n, V)
        t1 = time.perf_counter()
        if self.records_features:
            self._record(rows, logits, captured)
        t2 = time.perf_counter()
        live = [i for i, r in enumerate(rows) if not r.final]
        chosen = self._sample(rows, live, logits)
        for i, r in enumerate(rows):
            r.pos += 1
            if r.final:
                r.done = "length"
        for i, token in zip(live, chosen):
            self.append(rows[i], token)
        t3 = time.perf_counter()
        # Rows cut at the budget took part in this forward only for their features.
        extra = (n - len(live)) / n * (t1 - t0)
        self.timing["decode_s"] += (t1 - t0) + (t3 - t2) - extra
        self.timing["feature_s"] += t2 - t1 + extra
        self.timing["steps"] += 1

    def _ranges(self, n: int):
        """Attention ranges for this step; re-sorts the slots by length when their order drifted
        (`scheduler.resort_order`)."""
        order, ranges = resort_order([r.pos + 1 for r in self.rows[:n]])
        if order is not None:
            self._sort_slots(n, order)
        return ranges

    def _sort_slots(self, n: int, order: list[int]) -> None:
        """Permute rows 0..n-1 into `order`: caches, feature buffers and row states."""
        import torch

        perm = torch.tensor(order)
        length = max(r.pos for r in self.rows[:n])
        for cache in (self.cache.k, self.cache.v):
            for layer in cache:
                layer[:n, :, :length] = layer[:n, :, :length].index_select(0, perm.to(layer.device))
        self.ent[:n] = self.ent[:n].index_select(0, perm)
        for buf in self.states.values():
            buf[:n] = buf[:n].index_select(0, perm)
        self.rows[:n] = [self.rows[s] for s in order]
        self.timing["resorts"] = self.timing.get("resorts", 0) + 1

    def _record(self, rows, logits, captured) -> None:
        import torch

        fed = torch.tensor([len(r.tokens) - 1 for r in rows])  # j: this step feeds token j+1
        n = len(rows)
        self.ent[torch.arange(n), fed] = self._entropy(logits).cpu()
        keep = (fed < self.settings.steps).nonzero().flatten()
        if len(keep):
            for x, buf in self.states.items():
                buf[keep, fed[keep]] = captured[x][keep.to(logits.device), -1].float().cpu()

    def _sample(self, rows, live: list[int], logits) -> list[int]:
        """Rows with equal sampling settings are drawn together, each from its own generator."""
        import torch

        chosen: dict[int, int] = {}
        by_settings: dict[tuple, list[int]] = {}
        for i in live:
            key = (rows[i].request.temperature, rows[i].request.top_p)
            by_settings.setdefault(key, []).append(i)
        for (temperature, top_p), idx in by_settings.items():
            scores = (logits if len(idx) == len(rows)  # every row: no (n, V) copy
                      else logits[torch.tensor(idx, device=logits.device)])
            picked = sample_seeded(scores, [rows[i].generator for i in idx], temperature, top_p)
            chosen.update(zip(idx, picked.tolist()))
        return [chosen[i] for i in live]

    def _finish(self, s: int, row: Row) -> Generation:
        t = len(row.tokens)
        features = None
        if self.records_features:
            features = Recorded(
                row.prefix.prompt_entropy, self.ent[s, :t].numpy().copy(), row.prefix.pooled,
                {f"step_states_l{x}": fp16_safe(buf[s, : min(self.settings.steps, t)].clone())
                 for x, buf in self.states.items()})
        return Generation(row.request.uid, tuple(row.tokens), row.done, features)

    # ------------------------------------------------------------------ the model

    def _forward(self, ids, positions, plan):
        """Recorded layers' states and the final normed state for ids (B, q) at positions (B, q)."""
        embed, layers, norm, rotary, cache_kw = self._parts
        self.cache.plan = plan
        h = embed(ids)  # (B, q, D)
        captured = {0: h} if 0 in self.layers else {}
        pos_emb = rotary(h, positions)
        for i, layer in enumerate(layers[: self.num_layers]):
            out = layer(h, attention_mask=plan, position_ids=positions,
                        position_embeddings=pos_emb, **{cache_kw: self.cache})
            h = out[0] if isinstance(out, tuple) else out
            if i + 1 in self.layers:
                captured[i + 1] = h
        final = norm(h)
        if self.num_layers in self.layers:
            captured[self.num_layers] = final
        return captured, final

    def slot_attention(self):
        """Route the model's attention modules to the slot kernel for the engine's forwards only."""
        from contextlib import contextmanager

        @contextmanager
        def ctx():
            config = self.model.config
            previous = config._attn_implementation
            config._attn_implementation = ATTENTION_NAME
            try:
                yield
            finally:
                config._attn_implementation = previous
        return ctx()
