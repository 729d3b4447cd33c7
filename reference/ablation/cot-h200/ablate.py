"""Issue-30 ablation on a GPU-built dataset: each variant through `forelen evaluate` (records as
the CLI writes them), with each record's test predictions kept beside it for the per-row
analysis. Usage: python ablate.py DATA RESULTS CONFIG OUT.json"""
import json
import sys
import time

import numpy as np

import forelen_bench.leaderboard.evaluate as ev
from forelen_bench.cli import main

data, results, config, out = sys.argv[1:5]
VARIANTS = [
    ("constant-median", None), ("prompt-length", None),
    ("egtp", None), ("egtp", "decode=median"), ("egtp", "decode=median,censoring=survival"),
    ("plp", None), ("plp", "decode=median"), ("plp", "decode=median,censoring=survival"),
    ("trail", None), ("trail", "decode=median"),
    ("pool-last", None), ("pool-last", "decode=median"),
    ("pool-last", "decode=median,censoring=survival"),
    ("egtp", "censoring=survival"),
]
captured = {}
original = ev.evaluate_one


def keep(pred, split3, seed):
    result = original(pred, split3, seed)
    captured["y"] = np.asarray(split3.test["output_tokens"], float).tolist()
    captured["censored"] = (np.asarray(split3.test["finish_reason"]) == "length").tolist()
    captured["units"] = np.asarray(split3.test_units()).astype(str).tolist()
    captured["last"] = np.asarray(result["predictions"], float).tolist()
    return result


ev.evaluate_one = keep
runs = []
for name, args in VARIANTS:
    argv = ["evaluate", "--data", data, "--results", results, "--config", config,
            "--predictor", name] + (["--predictor-args", args] if args else [])
    captured.pop("last", None)
    t0 = time.time()
    try:
        sys.argv = ["forelen"] + argv
        main()
        code = 0
    except SystemExit as e:
        code = e.code
    runs.append({"predictor": name, "args": args, "exit": code, "wall_s": round(time.time() - t0, 1),
                 "predictions": captured.get("last")})
    print(f"ABLATE {config} {name} {args} exit {code} {time.time() - t0:.1f}s", flush=True)
json.dump({"config": config, "y": captured.get("y"), "censored": captured.get("censored"),
           "units": captured.get("units"), "runs": runs}, open(out, "w"))
