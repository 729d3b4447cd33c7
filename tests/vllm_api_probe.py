"""Print, as JSON, the parts of the installed vLLM's API that the `vllm` engine relies on.

Run by tests/test_vllm_api.py with the Python of a separate virtualenv holding vllm (vllm pins its
own torch, so it cannot share the project's). Imports vllm, reads signatures and fields, and builds
a SamplingParams and a TokensPrompt for real; no GPU is needed for any of it.
"""

import dataclasses
import inspect
import json


def params(fn) -> list[str]:
    return [p.name for p in inspect.signature(fn).parameters.values()
            if p.kind is not inspect.Parameter.VAR_KEYWORD] + (
        ["**"] if any(p.kind is inspect.Parameter.VAR_KEYWORD
                      for p in inspect.signature(fn).parameters.values()) else [])


def fields(cls) -> list[str]:
    names = set()
    if dataclasses.is_dataclass(cls):
        names |= {f.name for f in dataclasses.fields(cls)}
    names |= set(getattr(cls, "__struct_fields__", ()))  # msgspec structs (SamplingParams)
    for klass in getattr(cls, "__mro__", (cls,)):
        names |= set(getattr(klass, "__annotations__", {}))
    if not names:
        names |= set(params(cls.__init__)) - {"self", "**"}
    return sorted(names)


def main() -> None:
    import vllm
    from vllm import LLM, SamplingParams
    from vllm.engine.arg_utils import AsyncEngineArgs, EngineArgs
    from vllm.inputs import TokensPrompt
    from vllm.outputs import CompletionOutput, RequestOutput
    from vllm.v1.engine.async_llm import AsyncLLM

    sp = SamplingParams(n=1, temperature=0.7, top_p=0.9, max_tokens=8, seed=3)
    tp = TokensPrompt(prompt_token_ids=[1, 2, 3])
    print(json.dumps({
        "version": vllm.__version__,
        "LLM": params(LLM.__init__), "EngineArgs": fields(EngineArgs),
        "LLM.generate": params(LLM.generate), "SamplingParams": fields(SamplingParams),
        "TokensPrompt": fields(TokensPrompt), "RequestOutput": fields(RequestOutput),
        "CompletionOutput": fields(CompletionOutput),
        # forelen replay --engine vllm (src/forelen/replay_vllm.py)
        "AsyncEngineArgs": fields(AsyncEngineArgs),
        "AsyncLLM.from_engine_args": params(AsyncLLM.from_engine_args),
        "AsyncLLM.generate": params(AsyncLLM.generate),
        "built": {"SamplingParams": [sp.n, sp.temperature, sp.top_p, sp.max_tokens, sp.seed],
                  "TokensPrompt": list(tp["prompt_token_ids"])},
    }))


if __name__ == "__main__":
    main()
