"""`forelen simulate`: fit and predict as `forelen evaluate` does, then print the schedules.

Its records go to RESULTS/simulate/<settings-hash>/<config>/<key>.json, never over the records of
`forelen evaluate` (whose end_to_end section uses the default settings), and a release reads only
the latter.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from forelen.leaderboard.evaluate import run_evaluation
from forelen.leaderboard.report import resolve_names
from forelen.simulator.endtoend import MODES, SimSettings, modes_for


def settings_key(settings: SimSettings) -> str:
    return hashlib.sha256(json.dumps(settings.record(), sort_keys=True, default=str)
                          .encode()).hexdigest()[:10]


def simulate_command(predictor: str, data: str, config: str, batching: str, settings: SimSettings,
                     results: str, console, families: tuple[str, ...] = ()) -> list[dict]:
    """Fit and predict as `forelen evaluate` does (records included), then print the schedules."""
    folder, configs, names = resolve_names(predictor, data, config, families)
    console.print(f"simulating {len(names)} predictor(s) on {len(configs)} config(s), "
                  f"seed {settings.seed}")
    results = str(Path(results) / "simulate" / settings_key(settings))
    records = run_evaluation(folder, configs, names, settings.seed, results, sim=settings,
                             say=console.print,
                             on_result=lambda r: console.print(
                                 f"  {r['dataset']['config']:>24}  {r['predictor']['name']}"))
    batchings = modes_for(True)
    modes = [m for m in MODES if batching in ("both", batchings[m][0])]
    console.width = max(console.width, 130)  # ten numeric columns; a pipe would get 80
    for cfg in configs:
        recs = [r for r in records if r["dataset"]["config"] == cfg]
        for mode in modes:
            has = [r for r in recs if mode in ((r.get("end_to_end") or {}).get("modes") or {})]
            if has:  # continuous-srpt: progressive predictors only
                console.print(table(cfg, mode, has))
    console.print(f"result records (with end_to_end): {Path(results) / '<config>' / '<predictor>.json'}")
    return records


def table(config: str, mode: str, records: list[dict]):
    """FCFS, the oracles, then every predictor by mean JCT, in one mode (a key of
    `end_to_end.modes`: static, continuous, continuous-srpt)."""
    from rich.table import Table

    s = records[0]["end_to_end"]["settings"]
    arrival = "all at t=0" if s["rate"] is None else f"Poisson {s['rate']:g} req/s"
    batching, policy = modes_for(True).get(mode, (mode, "sjf"))
    slots = (s.get("static_slots") or s["slots"]) if batching == "static" else s["slots"]
    t = Table(title=f"{config}: {batching} batching, {slots} slots, {arrival}, "
                    f"{records[0]['end_to_end']['modes'][mode]['fcfs']['requests']} requests, "
                    f"{policy.upper()}")
    for col in ("schedule", "policy", "tok/s", "req/s", "JCT mean s", "JCT p90 s", "padding",
                "JCT/FCFS", "JCT/oracle", "tok/s/oracle"):
        t.add_column(col, justify="left" if col in ("schedule", "policy") else "right", no_wrap=True)
    blocks = [(r["predictor"]["name"], r["end_to_end"]["modes"][mode]) for r in records]
    refs = {"FCFS": ("fcfs", blocks[0][1]["fcfs"])}
    for _, b in blocks:
        refs.setdefault(f"oracle {b['policy'].upper()}", (b["policy"], b["oracle"]))
    for name, (policy, m) in refs.items():
        t.add_row(name, policy, *_cells(m), "-", "-", "-", style="dim")
    for name, b in sorted(blocks, key=lambda x: x[1]["predictor"]["jct_mean_s"]):
        v, o = b["vs_fcfs"], b["vs_oracle"]
        t.add_row(name, b["policy"], *_cells(b["predictor"]), _f(v["jct_mean_s"], 3),
                  _f(o["jct_mean_s"], 3), _f(o["throughput_tok_s"], 3))
    return t


def _cells(m: dict) -> list[str]:
    return [_f(m["throughput_tok_s"], 1), _f(m["throughput_req_s"], 3), _f(m["jct_mean_s"], 2),
            _f(m["jct_p90_s"], 2), _f(m["padding_ratio"], 3)]


def _f(v, digits: int) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


