"""`vllm` engine (CUDA only, optional extra): n samples per group with explicit per-sample seeds.

Features still come from the teacher-forced recorder pass with the transformers model, so vLLM is
given a share of GPU memory that leaves room for it. vllm is imported only when this engine runs.
"""

from __future__ import annotations

from typing import Callable, Sequence

from forelen.builders.engines import (ENGINES, Engine, EngineInfo, Generation, GenerationRequest,
                                      finish)
from forelen.builders.engines.sampling import eos_ids
from forelen.errors import ForelenError
from forelen.models import model_dir

# Every name this engine passes to or reads from vLLM. tests/test_vllm_api.py checks them against
# the installed package (in its own virtualenv: vllm pins its own torch).
VLLM_API = {
    "LLM": ("model", "dtype", "enable_prefix_caching", "gpu_memory_utilization"),
    "LLM.generate": ("prompts", "sampling_params", "use_tqdm"),
    "SamplingParams": ("n", "temperature", "top_p", "max_tokens", "seed"),
    "TokensPrompt": ("prompt_token_ids",),
    "RequestOutput": ("outputs",),
    "CompletionOutput": ("token_ids", "finish_reason"),
}


@ENGINES.register("vllm")
class VLLMEngine(Engine):
    info = EngineInfo("vllm", "vLLM offline generation, prefix caching, per-sample seeds",
                      devices="cuda", requires="pip install 'forelen[vllm]' and a CUDA GPU",
                      offline=True)
    records_features = False  # states come from the teacher-forced recorder pass
    # Sequences per `generate` call: the build hands vLLM whole work units of many shards, so its
    # scheduler sees enough sequences to fill a GPU (one 32-sequence chunk per call starves it).
    work_unit = 4096

    @classmethod
    def check(cls, device: str) -> None:
        import importlib.util

        if not device.startswith("cuda"):
            raise ForelenError("engine 'vllm' needs a CUDA GPU and none is available; "
                               "use --engine hf on this machine")
        if importlib.util.find_spec("vllm") is None:
            raise ForelenError("engine 'vllm' needs vLLM: pip install 'forelen[vllm]'")

    @classmethod
    def create(cls, model, tokenizer, resolved_model, settings,
               gpu_memory_utilization: float = 0.6) -> "VLLMEngine":
        return cls(model_dir(resolved_model), eos_ids(model, tokenizer),
                   str(model.dtype).removeprefix("torch."), gpu_memory_utilization)

    def __init__(self, location: str, eos: set[int], dtype: str = "auto",
                 gpu_memory_utilization: float = 0.6):
        from vllm import LLM

        self.eos_ids = eos
        self.llm = LLM(model=location, dtype=dtype, enable_prefix_caching=True,
                       gpu_memory_utilization=gpu_memory_utilization)

    def generate(self, requests: Sequence[GenerationRequest],
                 on_done: Callable[[Generation], None] | None = None) -> list[Generation] | None:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        prompts = [TokensPrompt(prompt_token_ids=list(r.prompt_ids)) for r in requests]
        params = [SamplingParams(n=1, temperature=r.temperature, top_p=r.top_p,
                                 max_tokens=r.max_new_tokens, seed=r.seed % (2**31))
                  for r in requests]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        results = []
        for r, out in zip(requests, outputs):
            gen = from_vllm(r, out.outputs[0], self.eos_ids)
            if on_done:
                on_done(gen)
            else:
                results.append(gen)
        return None if on_done else results


def from_vllm(request: GenerationRequest, completion, eos: set[int]) -> Generation:
    """A vLLM completion as a Generation, with the `hf` engines' conventions.

    EOS, stop and finish_reason, compared:
    - Both stop a sample at the first token in the same EOS set: the tokenizer's EOS plus the
      model's generation_config `eos_token_id` (vLLM adds the latter to its stop tokens; the `hf`
      engines read it through `sampling.eos_ids`). Neither uses stop strings, `min_tokens` or
      `ignore_eos`.
    - vLLM keeps the EOS token at the end of `token_ids`; `hf` never appends it. `finish` cuts at
      the first EOS, so `token_ids` and `output_tokens` exclude EOS on every engine.
    - `finish_reason` is "stop" (EOS) or "length" on both. `hf` says "length" when a sample fills
      `max_new_tokens` without EOS, and an EOS drawn as the last allowed token is "stop" on both.
      vLLM also says "length" when a sample reaches the model's context (`max_model_len`) before
      `max_tokens`; the build clamps prompts so that cannot happen, but if it does the row is
      kept censored ("length"), as vLLM reports it, rather than re-labelled "stop".
    """
    gen = finish(request.uid, completion.token_ids, eos, request.max_new_tokens)
    if completion.finish_reason == "length" and gen.finish_reason != "length":
        return Generation(gen.uid, gen.token_ids, "length")
    return gen
