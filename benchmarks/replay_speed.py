"""How fast the machine ran in each policy's run of a saved replay result, and the simulator's
ratios with each run priced at its own speed (issue 33, part 5).

A replay result (`forelen replay --out`, `bench_replay.py --out`) keeps each run's decode
seconds and step count (`engine_timing`), FCFS's served cost model and every request's tokens.
Every run serves the same tokens, so the rows and the context summed over its decode steps are
the same in every run; only the number of steps differs. A run's speed is its decode seconds
over FCFS's fitted price for its steps; its prefill speed, its prefill seconds over FCFS's. Each
policy is then simulated with FCFS's served cost model scaled by its run's speeds, on the same
arrivals, lengths and keys. Results saved since `simulated_own_cost` existed carry the exact
form (each run's own fitted cost model); this script reads older ones too.

    python benchmarks/replay_speed.py reference/replay/cot256-egtp.json

The last line printed is one JSON object: per policy, speed, prefill_speed, measured_ratio,
simulated_ratio_fcfs_prices, simulated_ratio_own_speed, error_own_speed.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def main(argv=None) -> int:
    from forelen.replay import Served, TraceRequest, simulated
    from forelen.simulator.cost import CostModel

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("result", help="a saved replay result (JSON)")
    args = ap.parse_args(argv)
    try:
        d = json.loads(open(args.result).read())
        c = d["cost_model"]["served"]["coefficients"]
        runs = d["policies"]
        if d["settings"].get("rounds", 1) != 1 or "fcfs" not in runs:
            raise ValueError("needs one round with fcfs among the policies")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"error: {args.result}: not a one-round replay result with FCFS's served cost "
              f"model ({exc})", file=sys.stderr)
        return 2
    base = CostModel(*(c[k] for k in ("decode_base_s", "decode_per_seq_s",
                                       "decode_per_context_token_s", "prefill_base_s",
                                       "prefill_per_token_s")))
    budget = d["settings"]["max_new_tokens"]
    out, fcfs = {}, None
    for name, p in runs.items():
        req = d["per_request"][name]
        # the decode steps each request ran, as `replay.simulated` charges them
        steps = np.array([max(x["tokens"] - (x["finish_reason"] == "length"), 1) for x in req])
        prompt = np.array([x["prompt_tokens"] for x in req])
        rows, context = steps.sum(), float(np.sum(prompt * steps + steps * (steps + 1) / 2))
        timing = p["engine_timing"]
        priced = (base.decode_base_s * p["decode_steps"] + base.decode_per_seq_s * rows
                  + base.decode_per_context_token_s * context)
        speed = timing["decode_s"] / priced
        pre = timing["prefill_s"] / runs["fcfs"]["engine_timing"]["prefill_s"]
        own = CostModel(*(v * speed for v in (base.decode_base_s, base.decode_per_seq_s,
                                              base.decode_per_context_token_s)),
                        base.prefill_base_s * pre, base.prefill_per_token_s * pre)
        served = [Served(x["uid"], x["arrival_s"], x["prompt_tokens"], tokens=x["tokens"],
                         finish_reason=x["finish_reason"]) for x in req]
        trace = [TraceRequest(x["uid"], "", (0,) * x["prompt_tokens"], budget, 1.0, 1.0, 0,
                              x["arrival_s"], x["tokens"]) for x in req]
        keys = np.array([x["key"] for x in req], np.float64)
        policy = name.split(":")[0]
        sim = {k: simulated(served, trace, policy, keys, None, p["slots"], cm,
                            d["settings"]["rerank_every"], d["settings"]["preempt"])["mean_jct_s"]
               for k, cm in (("fcfs_prices", base), ("own_speed", own))}
        out[name] = {"speed": speed, "prefill_speed": pre,
                     "measured": p["measured"]["mean_jct_s"], **sim}
        fcfs = fcfs or out[name]
    line = {}
    print(f"{'policy':<20} {'speed':>6} {'prefill':>7} {'measured':>8} {'sim fcfs$':>9} "
          f"{'sim own':>8} {'error':>7}", file=sys.stderr)
    for name, r in out.items():
        m = r["measured"] / fcfs["measured"]
        s0, s = r["fcfs_prices"] / fcfs["fcfs_prices"], r["own_speed"] / fcfs["own_speed"]
        line[name] = {"speed": round(r["speed"], 4), "prefill_speed": round(r["prefill_speed"], 4),
                      "measured_ratio": round(m, 4), "simulated_ratio_fcfs_prices": round(s0, 4),
                      "simulated_ratio_own_speed": round(s, 4),
                      "error_own_speed": round(s / m - 1, 4)}
        print(f"{name[:20]:<20} {r['speed']:>6.3f} {r['prefill_speed']:>7.3f} {m:>8.3f} "
              f"{s0:>9.3f} {s:>8.3f} {s / m - 1:>+7.1%}", file=sys.stderr)
    print(json.dumps({"result": args.result, "policies": line}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
