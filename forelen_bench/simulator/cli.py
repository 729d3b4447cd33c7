"""`forelen simulate` and `forelen profile` front ends: run, print the end-to-end tables."""

from __future__ import annotations

import json
from pathlib import Path

from forelen_bench.simulator.endtoend import MODES, SimSettings


def settings_from_options(slots, kv_budget, rate, seed, aging, rerank_every, cost_model) -> SimSettings:
    from forelen_bench.simulator.cost import CostModel, load_cost_model

    cost = load_cost_model(cost_model) if cost_model else CostModel()
    return SimSettings(slots=slots, kv_budget_tokens=kv_budget, rate=rate, seed=seed, aging=aging,
                       rerank_every=rerank_every, cost=cost,
                       cost_source=str(cost_model) if cost_model else "default")


def simulate_command(predictor: str, data: str, config: str, batching: str, settings: SimSettings,
                     results: str, console, families: tuple[str, ...] = ()) -> list[dict]:
    """Fit and predict as `forelen evaluate` does (records included), then print the schedules."""
    from forelen_bench.leaderboard.evaluate import run_evaluation
    from forelen_bench.leaderboard.report import resolve_names

    folder, configs, names = resolve_names(predictor, data, config, families)
    console.print(f"simulating {len(names)} predictor(s) on {len(configs)} config(s), "
                  f"seed {settings.seed}")
    records = run_evaluation(folder, configs, names, settings.seed, results, sim=settings,
                             say=console.print,
                             on_result=lambda r: console.print(
                                 f"  {r['dataset']['config']:>24}  {r['predictor']['name']}"))
    modes = MODES if batching == "both" else (batching,)
    console.width = max(console.width, 130)  # ten numeric columns; a pipe would get 80
    for cfg in configs:
        recs = [r for r in records if r["dataset"]["config"] == cfg]
        for mode in modes:
            console.print(table(cfg, mode, recs))
    console.print(f"result records (with end_to_end): {Path(results) / '<config>' / '<predictor>.json'}")
    return records


def table(config: str, mode: str, records: list[dict]):
    """FCFS, the oracles, then every predictor by mean JCT."""
    from rich.table import Table

    s = records[0]["end_to_end"]["settings"]
    arrival = "all at t=0" if s["rate"] is None else f"Poisson {s['rate']:g} req/s"
    t = Table(title=f"{config}: {mode} batching, {s['slots']} slots, {arrival}, "
                    f"{records[0]['end_to_end']['modes'][mode]['fcfs']['requests']} requests")
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


def profile_command(model: str, device: str, dtype: str, out: str, console) -> dict:
    """Time the hf engine on this machine, fit the cost model, write it as JSON."""
    from forelen_bench.dataset import atomic_write_bytes
    from forelen_bench.simulator.cost import profile_hf

    console.print(f"profiling {model} on {device} (prefill and decode steps at a few batch sizes "
                  "and context lengths)")
    result = profile_hf(model, device=device, dtype=dtype, on_progress=lambda b, c: console.print(
        f"  batch {b:>3}, context {c:>4}: done"))
    atomic_write_bytes(Path(out), (json.dumps(result, indent=2) + "\n").encode())
    c = result["coefficients"]
    console.print(f"decode step = {c['decode_base_s'] * 1e3:.3f} ms + {c['decode_per_seq_s'] * 1e3:.4f}"
                  f" ms x batch + {c['decode_per_context_token_s'] * 1e6:.4f} us x context tokens; "
                  f"prefill = {c['prefill_base_s'] * 1e3:.3f} ms + "
                  f"{c['prefill_per_token_s'] * 1e3:.4f} ms x tokens")
    console.print(f"wrote {out}; use it with `forelen simulate --cost-model {out}`")
    return result
