"""`pia`: the generator predicts its own response length (Zheng et al., NeurIPS 2023).

"Response Length Perception and Sequence Scheduling: An LLM-Empowered LLM Inference Pipeline"
(arXiv:2305.13144), following the authors' repository (github.com/zhengzangw/Sequence-Scheduling).
Two modes, as there:

- `mode="zero-shot"` (the default): Perception in Advance. `PIA_PROMPT` (src/utils.py) is appended
  to the user's message: predict the length, print it on the first line, then answer. The model
  answers greedily, and its answer is read as the repository's `Predictor.predict_length` reads it
  (src/utils.py): `extract_all_numbers` over the whole decoded answer, not its first line.
- `mode="lora"`: the instruction-tuned length predictor. `QUERY_PROMPT` (src/construct.py) asks for
  one number only, and LoRA adapters are trained to answer it with the repository's settings
  (train.sh, src/train_lora.py): r 8, alpha 16, dropout 0.05 on q_proj/v_proj, lr 2e-5, 3 epochs,
  effective batch 32, warmup 3% then cosine decay, no weight decay. As src/construct.py builds its
  tuning set, there is one example per prompt (per `group_id`, however many samples the group has),
  labelled with the repository's `buckit` (round up to a multiple of 50) of the longest of the
  prompt's sampled lengths (the repository samples each prompt at four temperatures; here, the
  group's samples). Needs `peft`.

Reading a number (`parse_length`) is the repository's `extract_all_numbers` (src/utils.py): every
run of digits is a number; one number is the answer, two or more give the mean of the first
two. So "- 150 tokens" and "Estimated length - 150 tokens" read 150, "100-200" reads 150, and, as
there, "1,200" reads 100.5 (1 and 200), "12.5" reads 8.5, and words ("fifty") are no number.

Where forelen differs from the repository, on purpose: generation takes `max_new_tokens` (8, as
the repository's `predict_length`); an answer with no number falls back to the train median (the
repository returns 0) and is counted in `parse_failure_rate_`, which the record keeps, and so is an
absurd one (above 1e6, which the repository would keep); the LoRA predictor's answer is read with
`extract_all_numbers` too (the repository's `int(s.strip())` raises on anything but a bare
integer); the base model is the config's generator rather than Vicuna-7B, the tuning data its train
partition rather than Alpaca-10k, and training runs in float32 micro-batches of 8 accumulated 4
times (the repository: bf16, 2 x 16).

Where the instruction goes: the `prompt` column holds the chat-templated prompt the generator saw
(`builders.template.render`). The user text is recovered by rendering a sentinel with the same
tokenizer: the template's text before and after the sentinel must be a prefix and a suffix of the
stored prompt, and what lies between them is the user content. The instruction is appended to that
content and the turn is rendered again, so the model sees exactly the paper's user message inside
its own template. A prompt that does not match (another model's template, or a middle-truncated
over-long prompt) is rendered as if its whole stored text were the user content, instruction
appended; `prompt_recovery_rate_` reports the share that matched.
"""

from __future__ import annotations

import copy
import re

import numpy as np

from forelen.builders.engines import GenerationRequest, HFSettings
from forelen.builders.engines.hf import HFEngine
from forelen.builders.template import render
from forelen.errors import ForelenError
from forelen.models import load_model, pick_device, resolve_model
from forelen.predictors import PREDICTORS, Predictor, PredictorInfo

# src/utils.py PIA_PROMPT (zero-shot) and src/construct.py QUERY_PROMPT (the LoRA predictor)
PIA_PROMPT = ("\nBefore responding to the above instruction, you have to predict the length of your "
              "response. Print the estimated number of tokens in your response in the first line. "
              "Then change to a new line to respond to the instruction.")
QUERY_PROMPT = ("\nDon't output the response for the above instruction. Instead, you need to "
                "predict the number of tokens in your response. Output one number only.")
INSTRUCTIONS = {"zero-shot": PIA_PROMPT, "lora": QUERY_PROMPT}
MODES = tuple(INSTRUCTIONS)
FALLBACK_MODEL = "smollm2-135m"  # the packaged default, when neither `model` nor the table names one
MAX_LENGTH = 1e6  # a parsed answer above this is treated as unparsable
LORA_R, LORA_ALPHA, LORA_DROPOUT = 8, 16, 0.05
LORA_TARGETS = ("q_proj", "v_proj")
# train.sh: lr 2e-5, 3 epochs, 2 per device x 16 accumulation, warmup 3%, cosine, no decay
LORA_LR, LORA_EPOCHS, LORA_BUCKET = 2e-5, 3, 50
LORA_MICRO_BATCH, LORA_ACCUMULATE, LORA_WARMUP = 8, 4, 0.03

_SENTINEL = "\x00FORELEN-PIA-SENTINEL\x00"


class ModelCache:
    """The generator PiA asks, loaded once and shared by every PiA instance of the process (an
    evaluation fits and scores several), keyed by (location, device, dtype). The cached model is
    never modified: a LoRA instance adapts a copy of its own. `clear()` frees it."""

    def __init__(self):
        self._key, self._value = None, None

    def get(self, resolved, device: str, dtype: str):
        """(model, tokenizer), loading them when the key differs from the cached one."""
        key = (resolved.location, device, dtype)
        if self._key != key:
            self.clear()
            model, tokenizer, _ = load_model(resolved, device, dtype)
            self._key, self._value = key, (model, tokenizer)
        return self._value

    def clear(self) -> None:
        self._key, self._value = None, None


MODELS = ModelCache()


@PREDICTORS.register("pia")
class PIA(Predictor):
    """The generator predicts its response length when asked (Perception In Advance)."""

    info = PredictorInfo(name="pia", version="5", family="text-proxy",
                         reference="Zheng et al., NeurIPS 2023 (arXiv:2305.13144)",
                         requires=("prompt", "group_id"))

    def __init__(self, model: str | None = None, mode: str = "zero-shot", max_new_tokens: int = 8,
                 instruction: str | None = None, batch_size: int = 16, seed: int = 42,
                 device: str = "auto", dtype: str = "auto"):
        self.model = model
        self.mode = mode
        self.max_new_tokens = max_new_tokens
        self.instruction = instruction  # None: the mode's own (PIA_PROMPT or QUERY_PROMPT)
        self.batch_size = batch_size
        self.seed = seed
        self.device = device
        self.dtype = dtype

    def fit(self, table, y, eval_set=None) -> "PIA":
        if self.mode not in MODES:
            raise ForelenError(f"pia mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.mode == "lora":
            _require_peft()
        y = np.asarray(y, np.float64)
        spec = self.model or table.meta.get("model") or FALLBACK_MODEL
        self.model_spec_ = str(spec)
        # dtype "auto": the generator in the dtype it built the config in (its own numerics, and the
        # same record on machines with and without bf16 units), else the hardware's choice
        built_in = table.meta.get("dtype") if not self.model else None
        self.dtype_ = built_in if self.dtype == "auto" and built_in else self.dtype
        self.resolved_ = resolve_model(self.model_spec_)
        self.median_ = float(np.median(y)) if len(y) else 0.0
        self.lora_state_ = None
        self._adapted = None
        model, tokenizer = self._load()  # loaded (and cached) here: predict times inference only
        if self.mode == "lora":
            # one example per prompt, not per sample (src/construct.py): a group's rows share its
            # prompt, and the first stands for it
            rows, labels = group_labels(y, np.asarray(table["group_id"], dtype=object))
            date = table.meta.get("date_string")
            prompts = [self._query(tokenizer, str(p), date)
                       for p in np.asarray(table["prompt"], dtype=object)[rows]]
            # training changes the weights it adapts: a copy of the shared model, not the model
            self.lora_state_ = _train_lora(copy.deepcopy(model), tokenizer, prompts, labels,
                                           self.seed)
        return self

    def predict(self, table) -> np.ndarray:
        self.check_fitted()

        prompts = np.asarray(table["prompt"], dtype=object)
        if len(prompts) == 0:
            self.parse_failure_rate_, self.prompt_recovery_rate_ = 0.0, 1.0
            return np.zeros(0, dtype=np.float64)
        model, tokenizer = self._load()
        queries, recovered = [], 0
        for p in prompts:
            q, ok = self._query(tokenizer, str(p), table.meta.get("date_string"), report=True)
            queries.append(q)
            recovered += ok
        requests = [GenerationRequest(uid=str(i), prompt_ids=tokenizer(q, add_special_tokens=False)
                                      ["input_ids"], max_new_tokens=self.max_new_tokens,
                                      temperature=0.0, top_p=1.0, seed=self.seed + i)
                    for i, q in enumerate(queries)]
        engine = HFEngine(model, tokenizer, HFSettings(slots=self.batch_size, record=False))
        gens = engine.generate(requests)
        answers = [tokenizer.decode(g.token_ids, skip_special_tokens=True) for g in gens]
        # the whole answer, in both modes, as the repository's `predict_length` (src/utils.py)
        parsed = [parse_length(a) for a in answers]
        out = np.array([self.median_ if v is None else v for v in parsed], dtype=np.float64)
        self.parse_failure_rate_ = float(np.mean([v is None for v in parsed]))
        self.prompt_recovery_rate_ = recovered / len(prompts)
        self.last_answers_ = answers
        return out

    def get_state(self, folder) -> dict:
        """The generator is named, never copied (a saved pia needs the same model installed
        where it is loaded); the LoRA mode's merged weights are tensors."""
        state = super().get_state(folder)
        resolved = state.pop("resolved_")
        state["resolved_location_"] = resolved.location  # provenance only; resolved again on load
        return state

    def set_state(self, state: dict, folder) -> "PIA":
        super().set_state(state, folder)
        self.resolved_ = resolve_model(self.model_spec_)
        return self

    # --- helpers -------------------------------------------------------------------------------

    def _query(self, tokenizer, prompt: str, date: str | None = None, report: bool = False):
        """The stored prompt with the instruction appended to its user content, re-rendered on the
        day the config's prompts were rendered (`date_string`), as its generator saw them."""
        user = recover_user_text(tokenizer, prompt, date)
        instruction = INSTRUCTIONS[self.mode] if self.instruction is None else self.instruction
        text = render(tokenizer, (prompt if user is None else user) + instruction, date)
        return (text, user is not None) if report else text

    def _load(self):
        """(model, tokenizer) on the chosen device: the shared base model (`MODELS`), or, fitted in
        LoRA mode, this instance's own copy with its merged adapter weights."""
        import torch

        device = pick_device(self.device)
        model, tokenizer = MODELS.get(self.resolved_, device, getattr(self, "dtype_", self.dtype))
        if getattr(self, "lora_state_", None) is None:
            return model, tokenizer
        if getattr(self, "_adapted", None) is None:
            adapted = copy.deepcopy(model)
            with torch.no_grad():
                params = dict(adapted.named_parameters())
                for name, value in self.lora_state_.items():
                    params[name].copy_(value.to(params[name].device, params[name].dtype))
            self._adapted = adapted
        return self._adapted, tokenizer


def recover_user_text(tokenizer, prompt: str, date: str | None = None) -> str | None:
    """The user content of a prompt rendered by `render(tokenizer, text, date)`, or None if it
    wasn't (a template that prints the date must be rendered on the config's `date_string`)."""
    shell = render(tokenizer, _SENTINEL, date)
    head, sep, tail = shell.partition(_SENTINEL)
    if not sep or len(prompt) < len(head) + len(tail):
        return None
    if prompt.startswith(head) and prompt.endswith(tail):
        return prompt[len(head): len(prompt) - len(tail)]
    return None


def group_labels(y: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The LoRA tuning set, one example per prompt as src/construct.py builds it: each group's first
    row (in order of first appearance) and its label, `buckit` of the longest of its samples'
    lengths (the repository's `max` over the four temperatures' lengths)."""
    first: dict = {}
    longest: dict = {}
    for i, (g, length) in enumerate(zip(groups, np.asarray(y, np.float64))):
        first.setdefault(g, i)
        longest[g] = max(longest.get(g, length), length)
    rows = np.fromiter(first.values(), dtype=np.int64, count=len(first))
    labels = np.array([buckit(longest[g]) for g in first], dtype=np.int64)
    return rows, labels


def _require_peft():
    try:
        import peft  # noqa: F401
    except ImportError:
        raise ForelenError("pia mode='lora' needs the peft package: pip install peft") from None


def buckit(length: float, cell: int = LORA_BUCKET) -> int:
    """The repository's `buckit` (src/utils.py): truncate to an integer, round up to a multiple of
    `cell` (0 stays 0)."""
    x = int(length)
    return x if x % cell == 0 else (x // cell + 1) * cell


def _train_lora(model, tokenizer, queries: list[str], labels: np.ndarray, seed: int) -> dict:
    """Instruction-tune LoRA adapters to answer each query with its label (a bucketed length);
    merged weights.

    Loss on the answer tokens only (the query is masked with -100); AdamW without weight decay,
    the repository's lr, epochs, effective batch, warmup and cosine schedule (see the module).
    Returns the merged weights of the adapted linear layers, so `predict` needs no peft.
    """
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    targets = [t for t in LORA_TARGETS if t in names] or ["q_proj", "v_proj"]
    config = LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, lora_dropout=LORA_DROPOUT,
                        target_modules=targets, task_type="CAUSAL_LM")
    dtype = next(model.parameters()).dtype
    peft_model = get_peft_model(model.float(), config)
    peft_model.train()
    eos = tokenizer.eos_token or ""
    examples = []
    for q, label in zip(queries, labels):
        q_ids = tokenizer(q, add_special_tokens=False)["input_ids"]
        a_ids = tokenizer(f"{int(label)}{eos}", add_special_tokens=False)["input_ids"]
        examples.append((q_ids + a_ids, [-100] * len(q_ids) + a_ids))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    from transformers import get_cosine_schedule_with_warmup

    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=LORA_LR,
                            weight_decay=0.0)
    bs, effective = LORA_MICRO_BATCH, LORA_MICRO_BATCH * LORA_ACCUMULATE
    updates = LORA_EPOCHS * max(1, -(-len(examples) // effective))
    schedule = get_cosine_schedule_with_warmup(opt, int(np.ceil(LORA_WARMUP * updates)), updates)
    rng = np.random.default_rng(seed)
    device = next(peft_model.parameters()).device
    for _ in range(LORA_EPOCHS):
        order = rng.permutation(len(examples))
        starts = list(range(0, len(order), bs))
        for n, k in enumerate(starts):
            batch = [examples[i] for i in order[k: k + bs]]
            width = max(len(ids) for ids, _ in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)  # (B, T), right-padded
            labels = torch.full((len(batch), width), -100, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, (x, lab) in enumerate(batch):
                ids[row, : len(x)], labels[row, : len(x)] = torch.tensor(x), torch.tensor(lab)
                mask[row, : len(x)] = 1
            loss = peft_model(input_ids=ids.to(device), attention_mask=mask.to(device),
                              labels=labels.to(device)).loss
            (loss * len(batch) / effective).backward()  # accumulate to the effective batch
            if (n + 1) % LORA_ACCUMULATE == 0 or n + 1 == len(starts):
                opt.step()
                schedule.step()
                opt.zero_grad()
    peft_model.eval()
    merged = peft_model.merge_and_unload()
    merged.to(dtype)
    adapted = {f"{n}.weight" for n, m in merged.named_modules() if n.rsplit(".", 1)[-1] in targets}
    return {n: p.detach().cpu().clone() for n, p in merged.named_parameters() if n in adapted}


# --- parsing the model's answer --------------------------------------------------------------------

_DIGIT_RUN = re.compile(r"\d+")  # the repository's pattern: a sign, comma or point splits numbers
_MAX_DIGITS = 16  # a longer run is far past MAX_LENGTH (and int() refuses runs past 4300 digits)


def parse_length(text: str) -> float | None:
    """The length in a model's answer, read as the repository's `extract_all_numbers`
    (src/utils.py) reads it: the only run of digits, or the mean of the first two.

    "About 250 tokens" -> 250; "- 150 tokens" -> 150; "100-200" -> 150; "1,200" -> 100.5. No digits
    at all (the repository: 0), or a value above 1e6 -> None, so the caller can fall back and count.
    """
    if not isinstance(text, str):
        return None
    runs = _DIGIT_RUN.findall(text)[:2]
    if not runs:
        return None
    values = [float(int(r)) if len(r) <= _MAX_DIGITS else np.inf for r in runs]
    value = sum(values) / len(values)
    return value if value <= MAX_LENGTH else None
