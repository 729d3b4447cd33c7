"""Scheduling on the real engine (issue 33, part 5): a config's test prompts served through the
`hf` engine under FCFS, SJF (a hidden-state predictor, predicted in the engine from the prefill's
own features) and the oracle, at Poisson arrivals where FCFS queues, side by side in one process;
the simulator on the same trace with the cost model profiled in the same run.

FCFS is the baseline of every ratio, measured in the same run on the same machine. The utilisation
asked for (`--utilisation`, default 0.8) sets the rate from the cost model fitted to an FCFS probe
of `--calibrate` requests served at once (default 4 x slots; 0 prices it on the profile instead);
the measured one is FCFS's busy share (the served span less the gaps in which nothing ran or
waited). Each policy is served `--rounds` times (default 2), the order rotated each round, so a
drift in the machine's speed lands on all of them; `sjf:constant-median` (every key equal, FCFS's
order) is the control that shows what is left of it. The last line printed is one JSON object:
requests, predictor, overhead_ms_per_request, policies (measured and simulated per policy), ratios
(measured with its 95% interval over requests, simulated, the simulator's error with the
profile's prices, with FCFS's served prices and with each policy's own), busy_share,
served_over_fcfs (each run's decode steps over FCFS's fitted price: the machine's speed per run),
cost_model_served_over_profile, calibration, rounds, targets (the issue's two), machine.

    python benchmarks/bench_replay.py --data reference/forelen --config smollm2-135m-cot \\
        [--limit 200] [--predictor egtp] [--slots 16] [--max-new-tokens 512]
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv=None) -> int:
    from forelen.errors import ForelenError
    from forelen.replay import ReplayOptions, last_line, run, table

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="reference/forelen")
    ap.add_argument("--config", default="smollm2-135m-cot")
    ap.add_argument("--limit", type=int, default=200, help="test rows served (at least 200 for "
                                                          "the issue's benchmark)")
    ap.add_argument("--predictor", default="egtp")
    ap.add_argument("--policy", default="fcfs,sjf,sjf:constant-median,oracle",
                    help="sjf ranks by --predictor; sjf:constant-median is the control (every "
                         "key equal), oracle the recorded length")
    ap.add_argument("--slots", type=int, default=16)
    ap.add_argument("--kv-budget", type=float, default=4.0)
    ap.add_argument("--utilisation", type=float, default=0.8)
    ap.add_argument("--max-new-tokens", type=int, default=None)
    ap.add_argument("--preempt", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=2,
                    help="each policy served this many times, the order rotated each round")
    ap.add_argument("--calibrate", type=int, default=None,
                    help="FCFS probe requests that price --utilisation on served steps "
                         "(default: 4 x slots; 0: price it on the profile)")
    ap.add_argument("--out", default=None, help="the whole result, per request included (JSON)")
    args = ap.parse_args(argv)
    try:
        result = run(ReplayOptions(
            data=args.data, config=args.config, policies=tuple(args.policy.split(",")),
            predictor=args.predictor, utilisation=args.utilisation, limit=args.limit,
            max_new_tokens=args.max_new_tokens, slots=args.slots, kv_budget_gib=args.kv_budget,
            preempt=args.preempt, seed=args.seed, out=args.out, rounds=args.rounds,
            calibrate=4 * args.slots if args.calibrate is None else args.calibrate),
            say=lambda m: print(m, file=sys.stderr))
    except ForelenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(table(result), file=sys.stderr)
    line = last_line(result)
    fcfs = result["policies"].get("fcfs", {}).get("measured", {})
    line["busy_share"] = fcfs.get("busy_share")
    if line["busy_share"] is not None and line["busy_share"] < 0.8:
        print(f"note: FCFS kept the engine busy {line['busy_share']:.0%} of the time, below the "
              "0.8 the benchmark asks for; raise --utilisation", file=sys.stderr)
    # the targets: the simulator's ratio within 10% of the measured one; the
    # predictor's overhead under 1% of a request's service time
    errors = [abs(r["error"]) for r in line["ratios"].values() if r.get("error") is not None]
    ranked = [p for p in result["policies"].values() if p.get("predictor")]
    served = [abs(r["error_served_cost"]) for r in line["ratios"].values()
              if r.get("error_served_cost") is not None]
    line["cost_model_served_over_profile"] = (
        (result.get("cost_model") or {}).get("served", {}).get("served_over_profile"))
    # each run's decode steps over FCFS's fitted price for them: the machine's speed per run
    line["served_over_fcfs"] = {
        name: [round(x["decode_total"], 4) for x in p["served_over_fcfs"]]
        for name, p in result["policies"].items() if p.get("served_over_fcfs")}
    own = [abs(r["error_own_cost"]) for r in line["ratios"].values()
           if r.get("error_own_cost") is not None]
    line["calibration"] = result["settings"].get("calibration")
    line["rounds"] = result["settings"].get("rounds")
    line["targets"] = {
        "ratio_error_max": max(errors) if errors else None,
        # the simulator's schedule alone: priced by FCFS's own served steps, not the profile
        "ratio_error_max_served_cost": max(served) if served else None,
        # each policy priced on its own served steps: the machine's speed in each run included
        "ratio_error_max_own_cost": max(own) if own else None,
        "ratio_error_within_10pct": bool(errors) and max(errors) <= 0.10,
        "overhead_share_of_service": {
            name: p["overhead_ms_per_request"] / 1e3 / p["measured"]["service_s"]
            for name, p in result["policies"].items() if p.get("predictor")},
        "overhead_under_1pct": bool(ranked) and all(
            p["overhead_ms_per_request"] / 1e3 < 0.01 * p["measured"]["service_s"]
            for p in ranked)}
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
