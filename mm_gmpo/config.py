"""Experiment configuration: nested dataclasses, loaded from YAML with dotted command-line overrides.

``load_config("configs/geo3k_tiny.yaml", ["trainer.lr=1e-5"])`` validates every key and type once, at load time:
an unknown key or a wrong type fails with a :class:`UserError` that names the key (and the closest known key).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from mm_gmpo.errors import UserError

# The architectures of the random tiny models (``mm-gmpo make-tiny-model --kind``, ``model.tiny.kind``)
TinyKind = Literal["qwen2_5_vl", "qwen2", "qwen3_vl", "qwen3_vl_moe", "qwen3"]


@dataclass
class TinyConfig:
    """Sizes of the random tiny model built at ``model.path`` when it is missing and ``model.tiny_if_missing``."""

    kind: TinyKind = "qwen2_5_vl"  # architecture (as make-tiny-model --kind)
    hidden: int = 64  # text hidden size
    layers: int = 2  # text decoder layers
    heads: int = 4  # attention heads (hidden/heads must be even)
    kv_heads: int = 2  # key/value heads
    intermediate: int = 128  # MLP width
    vision_hidden: int = 64  # vision tower width
    vision_layers: int = 2  # vision tower depth
    seed: int = 0  # initialisation seed
    tokenizer: str = ""  # tokenizer folder instead of the Qwen vocabulary (toy tasks)
    toy_task: str = ""  # a synthetic task: build its toy model (Qwen2.5-VL, or Qwen2 for a text task) on a small BPE


@dataclass
class LoraConfig:
    """Optional LoRA adapters through PEFT (the reference model is then the adapter-free base)."""

    enabled: bool = False
    r: int = 16  # adapter rank
    alpha: int = 32  # scaling numerator
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


@dataclass
class ModelConfig:
    """The policy (and, when KL is on, the frozen reference: the same weights at step 0)."""

    path: str = "runs/models/tiny-qwen2_5_vl"  # hub id (Qwen/Qwen2.5-VL-7B-Instruct) or local folder
    tiny_if_missing: bool = False  # build a random tiny model at `path` if it does not exist (CPU demos, tests)
    tiny: TinyConfig = field(default_factory=TinyConfig)
    # auto: bf16 on GPU, fp32 on CPU. bf16 trains with fp32 master weights (autocast, or DeepSpeed's bf16 mode)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    # auto: flash_attention_2 on a GPU where flash_attn imports, else sdpa (logged at start); or any transformers
    # name (flash_attention_2, sdpa, eager, ...); empty: the transformers default
    attn_implementation: str = "auto"
    gradient_checkpointing: bool = False  # trade compute for activation memory
    # Hugging Face hub kernels (transformers' `use_kernels`, needs the `kernels` package and hub access at run time):
    # off by default, whatever the transformers version's own default is; logged at start
    use_kernels: bool = False
    lora: LoraConfig = field(default_factory=LoraConfig)
    # the KL reference lives in host memory (pinned on a GPU machine) and is copied onto the device only for its
    # log-prob pass each round (about 1 s for 16.6 GB of a 7B model), which frees its whole size on the GPU
    ref_offload: bool = False
    # frozen parts of a vision-language model: they keep their weights, the optimizer holds none of them, and the
    # vLLM sync does not resend them; the vision tower is the ViT (patch embedding and blocks), the merger projects
    # its output into the language model (Qwen3-VL: the merger and its DeepStack mergers)
    freeze_vision_tower: bool = False
    freeze_merger: bool = False


@dataclass
class DataConfig:
    """Which datasets, from where, and how prompts are built from them."""

    # dataset spec: geometry3k:<split>, math_lvl3to5, math500, jsonl:<path>, parquet:<path>, hf:<org/name>[:<split>]
    train: str = "geometry3k:train"
    val: str = "geometry3k:validation"  # validation spec; empty: no validation
    source: Literal["auto", "local", "hub"] = "auto"  # auto: local files when present, else the hub
    local_dir: str = ""  # root of local data; empty: data/sample of a source checkout, else the hub
    # prompt template (= data.prompts.TEMPLATES); geo3k_easyr1: geo3k's instruction after a space, as EasyR1;
    # qwen3_thinking: Qwen3's math prompt in the user turn, thinking on (the answer is read after </think>)
    template: Literal["geo3k", "qwen_math", "r1", "geo3k_easyr1", "qwen3_thinking"] = "geo3k"
    show_choices: bool = False  # list the multiple-choice options in the prompt
    max_prompt_length: int = 2048  # tokens incl. image tokens; longer prompts are dropped (never cut)
    min_pixels: int = 3136  # Qwen resize rule lower bound (pixels per image)
    max_pixels: int = 1003520  # Qwen resize rule upper bound (pixels per image)
    train_limit: int = 0  # use only the first N training rows (0: all)
    val_limit: int = 0  # use only the first N validation rows (0: all)
    skip_invalid: bool = False  # skip (and count) bad rows instead of failing
    blank_images: bool = False  # replace every image by a blank one (control: does the image matter?)
    shuffle: bool = True  # reshuffle the training set every epoch (seeded)
    # columns of your own dataset (jsonl, parquet, hf specs); empty: problem/question, answer, images/image, choices
    prompt_key: str = ""  # problem text
    answer_key: str = ""  # gold answer
    image_key: str = ""  # an image or a list of images (paths, bytes, or the datasets Image feature)
    choices_key: str = ""  # a list of multiple-choice options


@dataclass
class RolloutConfig:
    """Sampling of responses."""

    backend: Literal["hf", "vllm"] = "hf"  # hf generate (CPU/GPU) or a colocated vLLM engine (GPU)
    n: int = 5  # responses per prompt (the group size)
    prompts_per_round: int = 8  # prompts per rollout round, over all processes
    temperature: float = 1.0
    top_p: float = 1.0  # 1.0: off
    top_k: int = 0  # 0: off
    max_new_tokens: int = 2048  # responses cut here finish with reason "length"
    # tokens that end a response (training and validation, both backends); the default ends at end-of-turn or
    # end-of-text; ["<|endoftext|>"]: Qwen2.5-Math base's EOS only, as the official GMPO code samples
    stop_tokens: list[str] = field(default_factory=lambda: ["<|im_end|>", "<|endoftext|>"])
    val_temperature: float = 0.0  # 0: greedy validation
    val_n: int = 1  # samples per validation prompt
    val_also_greedy: bool = False  # with val_temperature > 0: also a greedy pass, logged as val/accuracy_greedy
    preflight: bool = True  # check trainer/sampler log-prob parity on the first round before training on it
    # Preflight gates on the mean and the 99th percentile of |trainer - sampler| log-prob over response tokens
    # (the maximum is reported, not gated: over ~1e5 bf16 tokens a few outliers are expected). 0: by dtype,
    # fp32 1e-5 / 1e-4, bf16 0.05 / 0.5 (mm_gmpo.rollout.preflight.PREFLIGHT_TOLERANCES)
    preflight_mean_tolerance: float = 0.0
    preflight_p99_tolerance: float = 0.0
    max_sampling_rounds: int = (
        3  # dynamic sampling: samplings per round at most (then fill with zero-advantage groups)
    )
    vllm_gpu_memory_utilization: float = 0.5  # share of GPU memory for the colocated vLLM engine while awake
    vllm_sleep: bool = True  # free vLLM's memory for the log-prob passes and the update (false: level 0)
    # 1: weights offloaded to host memory; 2: weights dropped (every wake is followed by a full sync anyway)
    vllm_sleep_level: int = 2
    vllm_tensor_parallel_size: int = 1  # GPUs per engine: groups of this many processes sample together
    vllm_sync_bucket_mb: int = 512  # weight sync streams buckets of about this size (ZeRO-3: gathered one at a time)


def _registered_losses() -> tuple[str, ...]:
    from mm_gmpo.algorithms import loss_names  # the loss registry (imports torch: only when the key is given)

    return loss_names()


@dataclass
class AlgorithmConfig:
    """Policy objective and advantages."""

    # a registered loss (mm_gmpo.algorithms.registry, docs/algorithms.md); a typo fails at load with a did-you-mean
    loss: str = field(default="gmpo", metadata={"choices": _registered_losses})
    clip_low: float | None = None  # None: the loss's default (GMPO 0.4 in log space, GRPO 0.2)
    clip_high: float | None = None  # None: the loss's default
    # dual-clip PPO (grpo, drgrpo): a token with A < 0 and ratio > clip_dual gets the constant ratio clip_dual;
    # 0: off; EasyR1 uses 3.0
    clip_dual: float = 0.0
    # seq_mean: each response's token mean, averaged over the mini-batch's responses; token_mean (grpo only, as
    # EasyR1): one mean over all response tokens of the mini-batch (and the KL term likewise)
    loss_aggregation: Literal["seq_mean", "token_mean"] = "seq_mean"
    normalize_std: bool = True  # divide group-centred rewards by the group std (False: Dr.GRPO)
    adv_eps: float = 1e-6  # A = (r - mean) / (std + adv_eps); the official GMPO code uses 1e-8
    kl_coef: float = 0.0  # KL to the reference policy; 0: off and no reference model is loaded
    # per-token KL estimator: k1 (log-ratio), k2 (half its square), k3 (exp(d) - d - 1), low_var_kl (EasyR1's k3)
    kl_estimator: Literal["k1", "k2", "k3", "low_var_kl"] = "k3"
    # true: the KL is a penalty on the reward (-kl_coef * the response's summed KL to the reference, before the
    # advantages; the classic PPO recipe) instead of a loss term
    kl_in_reward: bool = False
    # rollout importance sampling (docs/algorithms.md): weigh the loss by pi_old / pi_sampler, the trainer's
    # old log-probs over the sampler's (vLLM, bf16, other kernels); off, truncate (min(w, threshold)) or mask (drop
    # what lies outside [1/threshold, threshold]); per token, per sequence (the product) or geometric (its
    # geometric mean, GMPO's form)
    rollout_is_mode: Literal["off", "truncate", "mask"] = "off"
    rollout_is_level: Literal["token", "sequence", "geometric"] = "token"
    rollout_is_threshold: float = 2.0  # > 1
    entropy_coef: float = 0.0  # entropy bonus; 0: entropy is logged, not optimised
    # mixture-of-experts policies (Qwen3-VL-30B-A3B): adds coef x the routers' load-balancing loss (transformers'
    # load_balancing_loss_func over each micro-batch's real tokens) to the update, logged as actor/router_aux_loss.
    # 0 (off, our default): the routers learn from the policy loss alone, as verl (which turns the loss off for RL)
    # and EasyR1 train them; TRL's GRPO and the models' configs use 0.001. > 0 on a dense model is refused
    router_aux_loss_coef: float = 0.0
    # DAPO's dynamic sampling: drop groups whose rewards are all equal and sample further prompts until the round
    # holds rollout.prompts_per_round informative groups (at most rollout.max_sampling_rounds samplings)
    dynamic_sampling: bool = False
    # train even where every advantage is 0 (rollout.n=1, or rollout.temperature=0: identical responses), which
    # learns nothing from the rewards; refused at start unless set (e.g. to time a round, or with entropy_coef)
    allow_zero_advantages: bool = False


@dataclass
class RewardConfig:
    """The reward: weighted verifier accuracy and answer format, or a function of your own."""

    accuracy_weight: float = 0.9
    format_weight: float = 0.1
    # = reward.rewards.FORMAT_KINDS; easyr1: EasyR1's Geometry3K format, the whole response is
    # <think>...</think>...\boxed{...}... (spaces around <, >, / removed first)
    format: Literal["think_boxed", "boxed", "answer_tag", "easyr1", "none"] = "think_boxed"
    # which grader decides accuracy (= reward.graders.EXTRACTIONS): lenient, our verifier (a box, an answer tag,
    # "the answer is X", a last number); official, understand-r1-zero's boxed_reward_fn as GMPO's code runs it (1
    # only for a correct LAST \boxed{}, mathd + sympy + math_verify); easyr1, EasyR1's (mathruler's grader of the
    # last \boxed{)
    extraction: Literal["lenient", "official", "easyr1"] = "lenient"
    zero_truncated: bool = True  # a response cut at max_new_tokens scores 0
    # DAPO's soft overlong punishment: a response longer than rollout.max_new_tokens - overlong_buffer tokens loses
    # overlong_penalty * (its excess / overlong_buffer), up to overlong_penalty at the limit; 0: off
    overlong_buffer: int = 0
    overlong_penalty: float = 1.0
    timeout: float = 1.0  # seconds per verification, enforced in worker processes
    workers: int = 2  # verifier worker processes per training process
    memory_mb: int = 1024  # address-space limit per verifier worker
    # your own reward: path/to/file.py:name or package.module:name, called as name(response, answer, example) ->
    # float or {"total": float, "<name>": float, ...} in the verifier workers (docs/rewards.md);
    # empty: the weighted verifier accuracy and format above
    function: str = ""


@dataclass
class TrainerConfig:
    """The loop, optimisation, scale, checkpoints and logs."""

    output_dir: str = "runs/default"  # run directory: config, metrics.jsonl, checkpoints, tensorboard
    max_steps: int = 8  # optimizer steps in total
    seed: int = 0
    save_every: int = 0  # optimizer steps between checkpoints (a multiple of updates_per_round); 0: at the end
    keep_last: int = 2  # checkpoints kept
    resume_from: str = ""  # run directory (newest checkpoint) or a checkpoint folder to continue from
    overwrite: bool = (
        False  # output_dir holds an earlier run and no resume_from: move it aside to <output_dir>.old-<time>
    )
    deepspeed: str = ""  # DeepSpeed JSON (configs/deepspeed/zero2.json); empty: plain PyTorch
    lr: float = 1e-6
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # max global grad norm; 0: off
    warmup_steps: int = 0  # linear warm-up, then constant
    updates_per_round: int = 1  # optimizer steps per rollout round (mini-batches of the round's responses)
    # which of a process's rows form each mini-batch: strided (row % K == k; the same split on 1 or N processes)
    # or shuffle (the rows permuted first, seeded by trainer.seed, the round and the process: as the official
    # GMPO code, and an exact resume still replays it)
    minibatch_order: Literal["strided", "shuffle"] = "strided"
    micro_batch_size: int = 4  # sequences per forward/backward per process (when max_tokens_per_micro_batch is 0)
    # > 0: micro-batches of rows of similar length, each at most this many padded tokens (rows x its longest row,
    # prompt + response), each trimmed to its own longest row; 0: micro_batch_size rows each
    max_tokens_per_micro_batch: int = 0
    # true: each micro-batch's rows laid end to end in one sequence with no padding, each with its own positions
    # (rope (t, h, w) for Qwen2.5-VL); fast on a GPU with flash-attention 2 (sdpa/eager build a block-diagonal mask)
    packing: bool = False
    # several processes: before the old-log-prob pass, rows move between processes so that each optimizer step has
    # about the same tokens on every process (row counts kept; advantages already computed; the update is the same)
    balance_tokens: bool = True
    logprob_chunk_size: int = 512  # response tokens per LM-head chunk (never full [B, T, V] logits)
    val_every: int = 0  # rounds between validations; 0: only before training and at the end
    max_nonfinite_steps: int = 3  # consecutive skipped non-finite updates before the run stops
    tensorboard: bool = True
    wandb_project: str = ""  # log to Weights & Biases when set (pip install wandb)
    num_threads: int = 0  # torch CPU threads; 0: torch default
    progress: bool = True  # progress bar (step, reward, loss, seconds per step)


@dataclass
class WarmStartConfig:
    """Optional supervised warm start on gold answers before RL (a random tiny model would earn no reward)."""

    steps: int = 0  # optimizer steps of supervised training; 0: none (real checkpoints need none)
    lr: float = 1e-3
    batch_size: int = 8  # sequences per step
    reasoning: str = "Let me look at the figure."  # filler text inside <think> for the target responses


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    warmstart: WarmStartConfig = field(default_factory=WarmStartConfig)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, cls: type = Config) -> Any:
    """Read ``path`` (YAML) over the defaults of ``cls``, apply ``key.sub=value`` overrides, validate."""
    raw: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"config file not found: {path}")
        raw = read_yaml(path)
        if not isinstance(raw, dict):
            raise UserError(f"{path}: the top level must be a mapping of sections")
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"override {item!r} is not of the form key.sub=value")
        _set_dotted(raw, key.strip(), _parse_value(value))
    return _build(cls, raw, prefix="", root=cls)


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, but a key given twice in one mapping is an error (PyYAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:  # an unhashable key: PyYAML's own error follows
                continue
            if first != key_node.start_mark.line + 1:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} given twice (lines {first} and {key_node.start_mark.line + 1})",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path) -> Any:
    """A YAML file's content (empty: ``{}``), or a :class:`UserError` naming the file and line: not UTF-8 text, not
    valid YAML, or a key given twice in one mapping."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise UserError(f"{path} line {line} is not UTF-8 text (byte {data[exc.start]:#x}); save it as UTF-8") from exc
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader) or {}  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        raise UserError(_yaml_error(path, exc)) from exc


def _yaml_error(path: Path, exc: yaml.YAMLError) -> str:
    """One line: file, line and what the parser found (PyYAML's own message spans several lines)."""
    mark = getattr(exc, "problem_mark", None)
    where = f"{path} line {mark.line + 1}" if mark is not None else str(path)
    problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
    return f"{where}: not valid YAML ({problem})"


def to_dict(config: Any) -> dict:
    return dataclasses.asdict(config)


def save_config(config: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))


def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text


def _set_dotted(raw: dict, key: str, value: Any) -> None:
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        if node.get(part) is None:  # absent, or a section whose keys are all commented out (YAML: null)
            node[part] = {}
        node = node[part]
        if not isinstance(node, dict):
            raise UserError(f"override {key}: {part} is not a section")
    node[parts[-1]] = value


def _all_keys(cls: type, prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(cls):
        name = f"{prefix}{f.name}"
        keys.append(name)
        hint = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(hint):
            keys.extend(_all_keys(hint, name + "."))
    return keys


def _unknown_key(key: str, root: type) -> UserError:
    known = _all_keys(root)
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else ""
    return UserError(f"unknown config key {key}{hint}")


def _build(cls: type, raw: Any, prefix: str, root: type) -> Any:
    if raw is None and prefix:  # `trainer:` with every key commented out: an empty section, all defaults
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(f"config key {prefix.rstrip('.') or '<root>'} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in names:
            raise _unknown_key(f"{prefix}{key}", root)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in raw:
            kwargs[f.name] = _coerce(hints[f.name], raw[f.name], f"{prefix}{f.name}", root)
            if "choices" in f.metadata:  # a registry's names (e.g. algorithm.loss), read when the key is given
                _check_choice(f"{prefix}{f.name}", kwargs[f.name], tuple(f.metadata["choices"]()))
    return cls(**kwargs)


def _check_choice(key: str, value: Any, choices: tuple) -> None:
    """A :class:`UserError` naming ``key``, the valid values and the closest one when ``value`` is not one."""
    if value not in choices:
        close = difflib.get_close_matches(str(value), [str(a) for a in choices], n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise UserError(f"config key {key}={value!r} is not one of: {', '.join(map(str, choices))}{hint}")


def _coerce(hint: Any, value: Any, key: str, root: type) -> Any:
    """Check ``value`` against the field type ``hint``; ints are accepted for floats."""
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key + ".", root)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, key, root)
            except UserError as exc:
                errors.append(str(exc))
        raise UserError(errors[0])
    if origin is Literal:
        _check_choice(key, value, args)
        return value
    if origin is list:
        if not isinstance(value, list):
            raise UserError(f"config key {key} must be a list, got {value!r}")
        return [_coerce(args[0], v, f"{key}[{i}]", root) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"config key {key} must be a mapping, got {value!r}")
        return dict(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML 1.1 reads 1e-5 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if hint is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if hint in (int, float, str, bool) and not (
        isinstance(value, hint) and not (hint is int and isinstance(value, bool))
    ):
        raise UserError(f"config key {key} must be {hint.__name__}, got {value!r} ({type(value).__name__})")
    return value
