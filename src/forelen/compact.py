"""The compact form of a built config: what the registered predictors read, small enough for git.

A config's `step_states_l<l>` (S generated-token states per row and recorded layer) is nearly all
of its size: 64 x 576 x 2 bytes x 2 layers = 147 KB of a SmolLM2 row's 150 KB. The predictors
read few of them:

- PLP, at each observed step t (`metrics.OBSERVED_STEPS`), the mean of the first t states
  (`aggregator="mean"`, its default) or the t-th (`"last"`);
- TPV, the state at each observed step; TRAIL, the state every `refresh` (8) steps;
- all of them, past a row's end, its last state (`predictors/_steps.state_at`).

Each predictor reads one layer, by default `final` (PLP, TPV) or `mid` (TRAIL; `resolve_layer`). So
the compact form keeps, per row and kept layer, the reads of the predictors whose default layer
it is (`layer_steps`): the final layer's states at `MEAN_STEPS` and its means over the first t
states at `MEAN_STEPS`; the mid layer's states at `STATE_STEPS` and no means; a layer that is
neither, or both, the union; each also at the row's last step, in float16 as the dataset keeps
states
(`step_t_l<l>`, `step_at_l<l>`, `step_mean_t_l<l>`, `step_mean_l<l>`; `step_held_l<l>` is how
many states the row held). Every other column is copied unchanged. Reading it gives back a
`step_states_l<l>` column of `StepSummary` objects that serve exactly those reads, so a record
made from the compact form equals one made from the full config (PLP rounds its mean to float16
on both; tests/test_compact.py checks every step predictor). A read the form does not hold (a
non-default `refresh`, `steps` or `aggregator="entropy"`) fails in one line naming what it holds.

The folder is a dataset folder of the same layout (manifest, card, `data/<config>/<shard>`,
zstd parquet); the config's manifest entry says `"form": {"name": "compact", ...}` with the steps
kept, the layers whose states were kept and the fingerprint and shard hashes of the full config it
came from. The jobs of a sharded build (`--num-shards`) compact one by one, and `forelen merge`
joins their compact folders as it joins full ones, the merged form naming the full shards of all.
"""

from __future__ import annotations

import copy
import hashlib
import io
import re

import numpy as np

from forelen.columns import ragged
from forelen.dataset import MANIFEST, DatasetFolder
from forelen.errors import ForelenError
from forelen.leaderboard.records import dataset_fingerprint
from forelen.metrics import OBSERVED_STEPS
from forelen.schema import resolve_layer

FORM = "compact"
# 1: every kept layer held STATE_STEPS and MEAN_STEPS; 2: each layer holds its readers' steps
FORM_VERSION = 2
TRAIL_REFRESH = 8  # src/forelen/predictors/trail.py's default `refresh`
MEAN_STEPS = tuple(t for t in OBSERVED_STEPS if t > 0)
REFRESH_STEPS = tuple(range(TRAIL_REFRESH, 65, TRAIL_REFRESH))
STATE_STEPS = tuple(sorted(set(MEAN_STEPS) | set(REFRESH_STEPS)))
# (state steps, mean steps) read at each default layer (tests/test_compact.py checks the defaults):
# final: TPV's state at each observed step, PLP's mean over the first t (or, with
# aggregator="last", its t-th state); mid: TRAIL's state at each observed step (training) and
# every `refresh` steps (its filter), no means.
READS = {"final": (MEAN_STEPS, MEAN_STEPS), "mid": (STATE_STEPS, ())}
STEP_COLUMN = re.compile(r"^step_states_l(\d+)$")
PARTS = ("step_held", "step_t", "step_at", "step_mean_t", "step_mean")


class StepSummary:
    """One row's kept step states, read the way a predictor reads a (held, D) array of them:
    `len()` is the number of states the row held, `row[j]` the state at step j + 1 where it was
    kept, and `prefix_mean(t)` the float16 mean of the first min(t, held) states."""

    __slots__ = ("held", "ts", "states", "mean_ts", "means")

    def __init__(self, held: int, ts, states, mean_ts, means):
        self.held = int(held)
        self.ts = np.asarray(ts, np.int64)
        self.states = states
        self.mean_ts = np.asarray(mean_ts, np.int64)
        self.means = means

    def __len__(self) -> int:
        return self.held

    def __getitem__(self, j):
        if isinstance(j, (int, np.integer)):
            t = int(j) + 1 if j >= 0 else self.held + int(j) + 1
            hit = np.flatnonzero(self.ts == t)
            if len(hit):
                return self.states[hit[0]]
            kept = ", ".join(map(str, self.ts))
            raise ForelenError(f"the compact form keeps this layer's step states only at steps "
                               f"{kept or 'none'} (of this row); step {t} was read (rebuild the "
                               "full config, or read the layer its predictor reads by default)")
        raise ForelenError("the compact form keeps summaries of the step states, not the states "
                           "themselves; read them through predictors.plp.prefix_aggregate")

    def prefix_mean(self, t: int) -> np.ndarray:
        t = min(int(t), self.held)
        hit = np.flatnonzero(self.mean_ts == t)
        if not len(hit):
            kept = ", ".join(map(str, self.mean_ts))
            raise ForelenError(f"the compact form keeps this layer's step-state means only over "
                               f"the first {kept or 'no'} states (of this row); the first {t} "
                               "were read")
        return np.asarray(self.means[hit[0]], np.float32)


def layer_steps(layer: int, layers: list[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(state steps, mean steps) kept for `layer` of the recorded `layers`: the reads of the
    predictors whose default layer it is (`READS`), or the union where it is no default's."""
    roles = [role for role in READS if resolve_layer(role, layers) == layer]
    if len(roles) != 1:
        return STATE_STEPS, MEAN_STEPS
    return READS[roles[0]]


def summarise(states: np.ndarray, state_steps=STATE_STEPS, mean_steps=MEAN_STEPS
              ) -> tuple[int, list[int], np.ndarray, list[int], np.ndarray]:
    """(held, state steps, states, mean steps, means) of one row's (held, D) float16 states."""
    held = len(states)
    ts = sorted({t for t in state_steps if t <= held} | ({held} if held else set()))
    mean_ts = sorted({t for t in mean_steps if t <= held} | ({held} if held else set()))
    at = states[np.asarray(ts, np.int64) - 1] if ts else states[:0]
    means = (np.stack([prefix_mean(states, t) for t in mean_ts]).astype(np.float16) if mean_ts
             else np.zeros((0, states.shape[1] if states.ndim == 2 else 0), np.float16))
    return held, ts, at, mean_ts, means


def prefix_mean(states: np.ndarray, t: int) -> np.ndarray:
    """The mean of the first t of a row's float16 states, computed in float32 and rounded to
    float16, the precision the states are stored in, so the full and compact forms agree."""
    return np.asarray(states[:t], np.float32).mean(0).astype(np.float16).astype(np.float32)


def is_compact(entry: dict | None) -> bool:
    return bool(entry) and (entry.get("form") or {}).get("name") == FORM


def physical_columns(entry: dict, columns: list[str]) -> list[str]:
    """The columns to read from a compact config's shards for the logical `columns`."""
    kept = set((entry.get("form") or {}).get("step_layers", []))
    out = []
    for col in columns:
        m = STEP_COLUMN.match(col)
        if not m:
            out.append(col)
            continue
        layer = int(m.group(1))
        if layer not in kept:
            raise ForelenError(f"this compact config keeps step states of layer(s) "
                               f"{', '.join(map(str, sorted(kept))) or 'none'}; {col} was asked for")
        out += [f"{p}_l{layer}" for p in PARTS]
    return out


def assemble(cols: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Turn the compact step columns of a read table into `step_states_l<l>` columns."""
    layers = sorted({int(n.rsplit("_l", 1)[1]) for n in cols if n.startswith("step_held_l")})
    for layer in layers:
        held, ts, at, mts, means = (cols.pop(f"{p}_l{layer}") for p in PARTS)
        out = np.empty(len(held), dtype=object)
        for i in range(len(held)):
            out[i] = StepSummary(held[i], ts[i], at[i], mts[i], means[i])
        cols[f"step_states_l{layer}"] = out
    return cols


def _compact_table(table, layers: list[int], keep: list[int]):
    """The shard's Arrow table with each `step_states_l<l>` replaced by its summary columns
    (`keep`), or dropped (the layers not kept)."""
    import pyarrow as pa

    for layer in layers:
        name = f"step_states_l{layer}"
        if name not in table.column_names:
            continue
        col = table[name]
        dim = col.type.value_type.list_size
        index = table.column_names.index(name)
        table = table.remove_column(index)
        if layer not in keep:
            continue
        steps = layer_steps(layer, layers)
        rows = [summarise(s, *steps) for s in ragged(col, dim)]
        vec = pa.list_(pa.list_(pa.float16(), dim))

        def vectors(arrs):
            flat = np.concatenate([a.reshape(-1) for a in arrs]) if arrs else np.zeros(0, np.float16)
            offsets = np.cumsum([0] + [len(a) for a in arrs]).astype(np.int32)
            inner = pa.FixedSizeListArray.from_arrays(pa.array(flat.astype(np.float16)), dim)
            return pa.ListArray.from_arrays(pa.array(offsets), inner).cast(vec)

        parts = {
            "step_held": pa.array([r[0] for r in rows], pa.int32()),
            "step_t": pa.array([r[1] for r in rows], pa.list_(pa.int16())),
            "step_at": vectors([r[2] for r in rows]),
            "step_mean_t": pa.array([r[3] for r in rows], pa.list_(pa.int16())),
            "step_mean": vectors([r[4] for r in rows]),
        }
        for k, (part, arr) in enumerate(parts.items()):
            table = table.add_column(index + k, f"{part}_l{layer}", arr)
    return table


def compact(src: str, config: str, out: str, step_layers: list[int] | None = None,
            overwrite: bool = False, say=print) -> dict:
    """Write the compact form of `src`'s `config` into the dataset folder `out`; returns its
    manifest entry. Nothing is written until the source has been read and checked; shards are
    written atomically and the manifest last, so an interrupted run leaves no config behind."""
    import pyarrow.parquet as pq

    source = DatasetFolder(src)
    if not source.exists(MANIFEST):
        raise ForelenError(f"{src} is not a forelen dataset folder (no {MANIFEST})")
    entry = source.config(config)
    if entry is None:
        known = ", ".join(sorted(source.manifest()["configs"])) or "none"
        raise ForelenError(f"no config {config!r} in {src}; built: {known}")
    if entry.get("status") != "complete":
        raise ForelenError(f"config {config!r} in {src} is unfinished; finish its build first")
    if is_compact(entry):
        raise ForelenError(f"config {config!r} in {src} is already in the compact form")
    layers = list(entry["build"].get("recorded_layers") or [])
    keep = layers if step_layers is None else list(step_layers)
    unknown = sorted(set(keep) - set(layers))
    if unknown:
        raise ForelenError(f"layer(s) {', '.join(map(str, unknown))} not recorded in {config!r} "
                           f"(recorded: {', '.join(map(str, layers)) or 'none'})")
    if int(entry["build"].get("steps") or 0) > max(STATE_STEPS):
        raise ForelenError(f"{config!r} holds {entry['build']['steps']} step states a row; the "
                           f"compact form is defined for at most {max(STATE_STEPS)}")
    target = DatasetFolder(out)
    if target.exists(MANIFEST):
        if (target.location.rstrip("/") == source.location.rstrip("/")):
            raise ForelenError("write the compact form into another folder than its source")
        if target.config(config) is not None and not overwrite:
            raise ForelenError(f"{out} already holds {config!r}; pass --overwrite to replace it")
    if target.config(config) is not None:
        target.update(lambda m: m["configs"].pop(config, None))
        target.remove(config)
    shards = {}
    for name in sorted(entry["shards"]):
        data = source.read_bytes(f"data/{config}/{name}")
        if hashlib.sha256(data).hexdigest() != entry["shards"][name]["sha256"]:
            raise ForelenError(f"shard {source.shard_path(config, name)} is corrupt (sha256 "
                               "differs from the manifest); rebuild the config")
        table = _compact_table(pq.read_table(io.BytesIO(data), use_threads=False), layers, keep)
        shards[name] = target.write_shard(config, name, table)
        say(f"  {name}: {len(data) / 2**20:.1f} MiB -> {shards[name]['bytes'] / 2**20:.1f} MiB")
    new = copy.deepcopy(entry)
    new["shards"] = shards
    new["form"] = {"name": FORM, "version": FORM_VERSION,
                   "state_steps": {str(k): list(layer_steps(k, layers)[0]) for k in keep},
                   "mean_steps": {str(k): list(layer_steps(k, layers)[1]) for k in keep},
                   "step_layers": keep,
                   "source_fingerprint": dataset_fingerprint(entry),
                   "source_bytes": sum(int(s.get("bytes") or 0) for s in entry["shards"].values()),
                   "source_shards": {n: s["sha256"] for n, s in sorted(entry["shards"].items())}}
    target.update(lambda m: m["configs"].__setitem__(config, new))
    # card.py is page-only (provenance.PAGE_ONLY): never loaded to make a record
    from forelen.card import write_card

    write_card(target)
    return new


SOURCE_KEYS = ("source_fingerprint", "source_bytes", "source_shards")


def same_form(a: dict | None, b: dict | None) -> bool:
    """Whether two entries' forms agree, apart from which full shards they came from."""
    strip = lambda f: {k: v for k, v in (f or {}).items() if k not in SOURCE_KEYS}  # noqa: E731
    return strip(a) == strip(b)


def merged_form(forms: list[dict]) -> dict:
    """The form of a config merged from compact job folders: the full shards of every job."""
    shards = {n: h for f in forms for n, h in f["source_shards"].items()}
    out = dict(forms[0])
    out.update(source_shards=dict(sorted(shards.items())),
               source_bytes=sum(int(f.get("source_bytes") or 0) for f in forms),
               source_fingerprint=dataset_fingerprint(
                   {"shards": {n: {"sha256": h} for n, h in shards.items()}}))
    return out
