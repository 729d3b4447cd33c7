"""The end-to-end section's statistics: the schedule bootstrap pairs with `stats`, its stored
series decode, a progressive predictor is compared like for like, and static batching can
separate predictors on a workload shaped like the v0.1.0 audit's."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest

from forelen import stats
from forelen.metrics import OBSERVED_STEPS, group_resamples
from forelen.simulator import make_workload, sjf, srpt
from forelen.simulator.endtoend import (BOOT_KEYS, ENCODING, Scenario, SimSettings, _simulate,
                                        encode, series)

STEPS = np.asarray(OBSERVED_STEPS)
CAP = 2048


def _small(seed: int = 0, groups: int = 12, per: int = 3):
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(groups) * 7 + 100, per)  # unsorted-looking labels, sorted by np.unique
    rng.shuffle(g)
    y = rng.integers(1, 300, len(g))
    return rng.integers(1, 80, len(g)), y, g


def _remaining(y, seed: int = 0):
    rng = np.random.default_rng(seed)
    rem = np.maximum(y[:, None] - STEPS, 0) * np.exp(rng.normal(0, 0.3, (len(y), len(STEPS))))
    return np.where(y[:, None] > STEPS, rem, np.nan)


def _audit_like(n: int = 254, units: int = 94, seed: int = 0):
    """Shaped like v0.1.0's long split: 45.6% of the rows cut at 2,048 tokens, the others short
    (log-normal, median 80): mean 987 tokens, so 1 - mean / cap = 0.518 (v0.1.0: 0.5146)."""
    rng = np.random.default_rng(seed)
    groups = np.sort(np.concatenate([np.arange(units), rng.integers(0, units, n - units)]))
    y = np.minimum(np.ceil(rng.lognormal(np.log(80), 0.7, n)), CAP - 1)
    y[rng.choice(n, int(round(0.456 * n)), replace=False)] = CAP
    return rng.integers(30, 400, n), y.astype(np.int64), groups


def test_group_resamples_are_the_draws_of_stats_unit_weights():
    """Resample b lists each row as often as `stats.unit_weights` draws its unit in replicate b,
    across the chunks it draws in, with stats' seed by default: the schedule replicates pair with
    the MAE's."""
    _, _, g = _small()
    n_boot = 1_200  # three chunks of stats' draws
    gen = group_resamples(g, n_boot=n_boot)
    assert inspect.isgenerator(gen)  # lazily: 10,000 resamples are never held at once
    _, index = np.unique(g, return_inverse=True)
    weights = np.concatenate([w for _, w in stats.unit_weights(g, len(g), n_boot=n_boot)])
    size = np.bincount(index)  # rows per unit
    count = 0
    for b, rows in enumerate(gen):
        assert np.array_equal(np.bincount(index[rows], minlength=len(size)), weights[b] * size)
        # whole units: a drawn unit brings every one of its rows, as often as it was drawn
        assert np.array_equal(np.bincount(rows, minlength=len(g)), weights[b][index])
        count += 1
    assert count == n_boot
    assert inspect.signature(group_resamples).parameters["n_boot"].default == stats.N_BOOT
    other = next(group_resamples(g, seed=1, n_boot=1))
    assert not np.array_equal(np.bincount(index[other], minlength=12), weights[0] * size)


def test_bootstrap_defaults_to_the_published_count_and_seed():
    """The audit: the page said 10,000 while records held 200. The default is `stats.N_BOOT`
    with `stats.SEED`, not the simulator's arrival seed, and the record holds every replicate."""
    p, y, g = _small(groups=10, per=2)
    sc = Scenario(p, y, SimSettings(seed=42), 512)
    boot = sc.bootstrap(y + 5.0, g, workers=1)
    assert boot["n_boot"] == stats.N_BOOT == 10_000 and boot["seed"] == stats.SEED
    assert boot["method"] == stats.settings()["method"] and boot["encoding"] == ENCODING
    for mode in ("static", "continuous"):
        for k in BOOT_KEYS:
            assert len(series(boot["modes"][mode][k])) == 10_000
            assert len(series(boot["jackknife"][mode][k])) == boot["units"] == 10


def test_bootstrap_replicates_and_jackknife_replay_the_schedules():
    p, y, g = _small()
    sc = Scenario(p, y, SimSettings(seed=3), 512)
    pred, rem = y * 1.3 + 7, _remaining(y)
    boot = sc.bootstrap(pred, g, STEPS, rem, n_boot=40, seed=5, workers=1)
    assert set(boot) == {"unit", "units", "n_boot", "seed", "method", "level", "encoding",
                         "metrics", "modes", "jackknife"}
    assert boot["metrics"] == list(BOOT_KEYS) and boot["units"] == 12
    assert {m: b["policy"] for m, b in boot["modes"].items()} == {
        "static": "sjf", "continuous": "sjf", "continuous-srpt": "srpt"}
    json.dumps(boot)

    def replay(rows, mode):
        s = sc.settings
        w, order = make_workload(p[rows], y[rows], rate=s.rate, seed=s.seed, max_new_tokens=512)
        batching = "static" if mode == "static" else "continuous"
        plan = srpt(STEPS, rem[rows][order]) if mode == "continuous-srpt" else sjf(pred[rows][order])
        r = _simulate(w, plan, batching, s)
        return {"padding_ratio": r.padding, "jct_mean_s": float(np.mean(r.finish_s - w.arrival_s)),
                "throughput_tok_s": float(y[rows].sum() / r.finish_s.max())}

    draws = list(group_resamples(g, seed=5, n_boot=40))
    _, index = np.unique(g, return_inverse=True)
    for mode in boot["modes"]:
        for b in (0, 17, 39):
            want = replay(draws[b], mode)
            for k in BOOT_KEYS:
                assert series(boot["modes"][mode][k])[b] == pytest.approx(want[k], rel=1e-6)
        for u in (0, 11):  # units in sorted order, as stats' jackknife lists them
            want = replay(np.flatnonzero(index != u), mode)
            for k in BOOT_KEYS:
                assert series(boot["jackknife"][mode][k])[u] == pytest.approx(want[k], rel=1e-6)
    # the same rows, predictions and seed give the same block (records pair across predictors)
    assert sc.bootstrap(pred, g, STEPS, rem, n_boot=40, seed=5, workers=1) == boot


def test_bootstrap_gives_a_bca_interval_and_a_paired_one():
    p, y, g = _small(groups=20)
    sc = Scenario(p, y, SimSettings(seed=0), 512)
    rng = np.random.default_rng(1)
    good, bad = y * np.exp(rng.normal(0, 0.2, len(y))), rng.permutation(y).astype(float)
    a, b = (sc.bootstrap(x, g, n_boot=400, workers=1) for x in (good, bad))
    va = sc.block(good)["modes"]["continuous"]["predictor"]["jct_mean_s"]
    vb = sc.block(bad)["modes"]["continuous"]["predictor"]["jct_mean_s"]
    ra, rb = (series(x["modes"]["continuous"]["jct_mean_s"]) for x in (a, b))
    ja, jb = (series(x["jackknife"]["continuous"]["jct_mean_s"]) for x in (a, b))
    (lo, hi), method = stats.interval(va, ra, ja)
    assert method == "bca" and lo < va < hi
    (dlo, dhi), method = stats.interval(va - vb, ra - rb, ja - jb)  # paired: same resamples
    assert method == "bca" and dhi < 0  # the informative order serves requests sooner


def test_worker_processes_do_not_change_the_result():
    p, y, g = _small(seed=2)
    sc = Scenario(p, y, SimSettings(seed=0), 512)
    pred, rem = y + 3.0, _remaining(y, 2)
    one = sc.bootstrap(pred, g, STEPS, rem, n_boot=60, workers=1)
    assert sc.bootstrap(pred, g, STEPS, rem, n_boot=60, workers=2) == one


def test_series_reads_both_formats():
    values = np.array([0.25, 1234.5678, 1e-3, 7.0])
    stored = encode(values)
    assert isinstance(stored, str)
    assert np.array_equal(series(stored), values.astype("<f4").astype(np.float64))
    assert series(stored).dtype == np.float64
    # v0.1.0 records: plain lists of 200 replicates
    assert np.array_equal(series([0.5, 0.25]), np.array([0.5, 0.25]))
    # the documented byte layout: little-endian float32, base64
    import base64
    assert base64.b64decode(encode([1.0])) == b"\x00\x00\x80\x3f"


def test_static_batching_separates_predictors_on_the_audit_workload():
    """v0.1.0 ran static batching in 63-row batches on 254 test rows with 45.6% of them cut at
    the cap: with 5 batches, any ranking that lets one capped row into every batch scores
    1 - mean / cap, as FCFS does, so EGTP, TRAIL and FCFS all showed 0.5146. The default batch
    size (auto_static_slots: 15 here, 17 batches) separates an informative predictor from an
    uninformative order, and a better predictor from a worse one."""
    p, y, g = _audit_like()
    rng = np.random.default_rng(100)
    better = y * np.exp(rng.normal(0, 1.0, len(y)))  # informative, noisy
    worse = y * np.exp(rng.normal(0, 2.0, len(y)))  # informative, very noisy
    shuffled = np.random.default_rng(200).permutation(y).astype(float)  # no information
    floor = 1 - y.mean() / CAP  # every batch holds a capped row

    def static(slots, pred):
        b = Scenario(p, y, SimSettings(seed=0, static_slots=slots), CAP).block(pred)["modes"]["static"]
        return (b["predictor"]["padding_ratio"], b["fcfs"]["padding_ratio"],
                b["capped_batches"]["predictor"], b["capped_batches"]["fcfs"])

    old = [static(63, x) for x in (worse, shuffled)]
    for pad, fcfs_pad, capped, fcfs_capped in old:  # all identical: the audit's finding
        assert pad == pytest.approx(floor) and fcfs_pad == pytest.approx(floor)
        assert capped == fcfs_capped == 1.0
    assert Scenario(p, y, SimSettings(seed=0), CAP).settings.static_slots == 15
    (b_pad, fcfs_pad, b_cap, fcfs_cap), (w_pad, _, w_cap, _), (s_pad, _, s_cap, _) = (
        static(None, x) for x in (better, worse, shuffled))
    assert fcfs_pad == pytest.approx(floor) and fcfs_cap == 1.0
    assert s_pad == pytest.approx(floor) and s_cap == 1.0  # an uninformative order: the floor
    assert b_pad < w_pad < s_pad - 0.03  # graded by how well capped rows are kept apart
    assert b_cap < w_cap < 1.0
    oracle = Scenario(p, y, SimSettings(seed=0), CAP).block(y * 1.0)["modes"]["static"]
    assert oracle["predictor"]["padding_ratio"] < b_pad
    assert oracle["capped_batches"]["oracle"] == pytest.approx(8 / 17)  # 9 of 17 capped-free
