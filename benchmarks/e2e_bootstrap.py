"""Cost of the end-to-end schedule bootstrap at the published replicate count, and its record size.

`Scenario.bootstrap` replays a predictor's schedules on `stats.N_BOOT` (10,000) group resamples of
a config's test rows and on every leave-one-unit-out sample. This script times it on synthetic
workloads shaped like the v0.1.0 configs: 45.6% of the rows cut at a cap of 2,048 tokens (long's
share) and the rest log-normal below it (median 80 tokens, so the mean is long's 987-994), in
254 rows of 94 prompts (cot's size), 352 rows of 40 prompts (rl's) and an rl-sized 1,000 rows of
125 prompts. Two predictors each: a static one (SJF in static and continuous batching, 2 modes)
and a progressive one (the same plus continuous batching with SRPT, 3 modes), both noisy around
the truth. Each is timed at 10,000 replicates plus the jackknife (worker processes as
`bootstrap` picks them by default) and, in the same process, as v0.1.0 ran it: 200 replicates,
no jackknife, one process. The record size is that of the `bootstrap` block as JSON, against the
v0.1.0 format (plain lists of 200 values rounded to 6 digits).

    python benchmarks/e2e_bootstrap.py [--n-boot 10000] [--workers N] [--quick]

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

from forelen.metrics import OBSERVED_STEPS
from forelen.simulator.endtoend import BOOT_KEYS, Scenario, SimSettings, _Replay, _run_replicates

CAP = 2048
CAPPED = 0.456
WORKLOADS = ((254, 94), (352, 40), (1000, 125))
OLD_N_BOOT = 200


def workload(n: int, units: int, seed: int = 0):
    """(prompt tokens, output tokens, prompt of each row): CAPPED of the rows at CAP."""
    rng = np.random.default_rng(seed)
    groups = np.sort(np.concatenate([np.arange(units), rng.integers(0, units, n - units)]))
    y = np.minimum(np.ceil(rng.lognormal(np.log(80), 0.7, n)), CAP - 1)
    y[rng.choice(n, int(round(CAPPED * n)), replace=False)] = CAP
    return rng.integers(30, 400, n), y.astype(np.int64), groups


def predictions(y, seed: int = 1):
    """A noisy static prediction and noisy re-predictions at the observed steps."""
    rng = np.random.default_rng(seed)
    steps = np.asarray(OBSERVED_STEPS)
    noise = np.exp(rng.normal(0, 0.3, (len(y), len(steps))))
    remaining = np.where(y[:, None] > steps, np.maximum(y[:, None] - steps, 0) * noise, np.nan)
    return y * np.exp(rng.normal(0, 0.5, len(y))), steps, remaining


def old_format_bytes(reps: np.ndarray, policies: list[str]) -> int:
    """Size of a bootstrap block in the v0.1.0 format: plain lists of values rounded to 6 digits."""
    modes = {f"mode{i}": {"policy": policy} | {k: [round(float(v), 6) for v in reps[:, i, j]]
                                               for j, k in enumerate(BOOT_KEYS)}
             for i, policy in enumerate(policies)}
    return len(json.dumps({"unit": "group", "n_boot": len(reps), "seed": 0,
                           "metrics": list(BOOT_KEYS), "modes": modes}))


def cpu() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-boot", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=None, help="default: as bootstrap picks")
    ap.add_argument("--quick", action="store_true", help="1,000 replicates (a smoke run)")
    args = ap.parse_args()
    n_boot = 1_000 if args.quick else args.n_boot
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"{cpu()}, {cores} cores available; {n_boot:,} replicates against {OLD_N_BOOT}")
    out = []
    for n, units in WORKLOADS:
        p, y, groups = workload(n, units)
        sc = Scenario(p, y, SimSettings(seed=0), CAP)
        pred, steps, remaining = predictions(y)
        for kind, (st, rem) in (("static", (None, None)), ("progressive", (steps, remaining))):
            job = _Replay(sc, pred, st, rem, groups, 0, OLD_N_BOOT)
            t = time.perf_counter()
            old = _run_replicates(job, 1)  # v0.1.0: 200 replicates, no jackknife, one process
            old_s = time.perf_counter() - t
            t = time.perf_counter()
            block = sc.bootstrap(pred, groups, st, rem, n_boot=n_boot, workers=args.workers)
            s = time.perf_counter() - t
            size = len(json.dumps(block))
            row = {"rows": n, "units": units, "predictor": kind, "modes": len(block["modes"]),
                   "slots": sc.settings.slots, "static_slots": sc.settings.static_slots,
                   "n_boot": n_boot, "workers": args.workers or "auto", "seconds": round(s, 2),
                   "seconds_per_replicate": round(s / n_boot, 5), "record_bytes": size,
                   "old_n_boot": OLD_N_BOOT, "old_seconds": round(old_s, 2),
                   "old_seconds_per_replicate": round(old_s / OLD_N_BOOT, 5),
                   "old_record_bytes": old_format_bytes(old, [b for _, b in job.modes.values()])}
            out.append(row)
            print(f"  {n:5d} rows, {units:3d} units, {kind:>11} ({row['modes']} modes): "
                  f"{n_boot:,} replicates + {units} jackknife samples in {s:6.1f} s "
                  f"({s / n_boot * 1e3:5.2f} ms each); {OLD_N_BOOT} in {old_s:5.2f} s; "
                  f"block {size / 1024:6.1f} KiB (v0.1.0 format at {OLD_N_BOOT}: "
                  f"{row['old_record_bytes'] / 1024:5.1f} KiB)")
    print(json.dumps({"machine": f"{cpu()}, {cores} cores", "workloads": out}))


if __name__ == "__main__":
    main()
