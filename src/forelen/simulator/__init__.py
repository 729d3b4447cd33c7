"""Scheduling simulator: what a predictor's accuracy does to throughput, JCT and padding.

The test rows of a config (prompt tokens, true output tokens) are served by a simulated engine with
B slots, under static or continuous batching, ordered by FCFS, SJF on a prediction, SRPT with
progressive re-prediction, or the oracle (true lengths). The paper's end-to-end result (vLLM, SJF,
long-sequence scenario): padding ratio 0.18 with EGTP vs 0.51 with TRAIL, average JCT 4.20 vs 9.45.

Modules: requests (workload, arrivals), policies (priority plans), cost (step-time model), profile
(timing the hf engine to fit it), engine (event-driven simulation), naive (per-step reference),
endtoend (metrics, record section). Pure numpy and the standard library, profile apart (torch and
the engine).
"""

from forelen.simulator.cost import CostModel, load_cost_model
from forelen.simulator.endtoend import Scenario, SimSettings, auto_slots
from forelen.simulator.engine import SimResult, simulate
from forelen.simulator.policies import Plan, fcfs, oracle, sjf, srpt
from forelen.simulator.requests import Workload, make_workload

__all__ = ["CostModel", "Plan", "Scenario", "SimResult", "SimSettings", "Workload", "auto_slots",
           "fcfs", "load_cost_model", "make_workload", "oracle", "simulate", "sjf", "srpt"]
