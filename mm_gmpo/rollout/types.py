"""The records of the rollout stage: sampling parameters and the typed batch handed to the trainer.

Memory layout of a :class:`RolloutBatch`: the ``n`` responses of a prompt share that prompt's images. Pixel
values and ``image_grid_thw`` are stored once per *prompt* (the batch's "prompt table"), and every row points to
its prompt through ``row_prompt``. The trainer's forward runs the vision tower once per prompt and copies the
image embeddings into each of the prompt's rows (see :mod:`mm_gmpo.trainer.forward`), so a group of 8 costs one
vision pass, not eight. Qwen2.5-VL's 3-D rope positions are not stored: they are a pure function of
``input_ids``, ``attention_mask`` and the rows' ``image_grid_thw`` and are rebuilt with the model's own
``get_rope_index`` in the trainer (:func:`mm_gmpo.trainer.forward.rope_position_ids`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch

from mm_gmpo.types import Example

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class SamplingParams:
    """How responses are sampled. ``temperature=0`` is greedy; ``top_k=0`` and ``top_p=1.0`` are off."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 256
    seed: int = 0  # with the row's key, seeds the row's own generator: same prompt, seed and key, same response
    first_prompt: int = 0  # global index of the call's first prompt; a row's key is (prompt index, sample index)
    # the tokens that end a response (``rollout.stop_tokens``), and only they; None: end-of-turn or end-of-text,
    # whichever the tokenizer has (rollout.batching.STOP_TOKENS)
    stop_tokens: tuple[str, ...] | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    @property
    def truncates(self) -> bool:
        """True when top-k/top-p cut the distribution (the sampler's log-probs then differ from the trainer's)."""
        return not self.greedy and (self.top_k > 0 or self.top_p < 1.0)


@dataclass
class RolloutBatch:
    """N = G prompts x n responses, kept together by prompt. P prompt tokens (left-padded), R response tokens.

    Row ``i`` is response ``i % n`` of prompt ``row_prompt[i]``. Token layout per row:
    ``[pad ... pad, prompt tokens, response tokens, end-of-turn, pad ... pad]`` with the prompt ending at column P.
    """

    input_ids: torch.Tensor  # [N, P+R] long: left-padded prompt, then the response right-padded with pad_token_id
    attention_mask: torch.Tensor  # [N, P+R] long: 1 on prompt tokens and on response tokens up to end-of-turn
    response_mask: torch.Tensor  # [N, R] bool: response text tokens up to and including end-of-turn; nothing after
    sampler_logprobs: torch.Tensor  # [N, R] float32: sampler's log-prob of each response token (0 where masked)
    prompt_length: int  # P: column where the responses start
    row_prompt: torch.Tensor  # [N] long: index of the row's prompt in this batch's prompt table (0..G'-1)
    group_index: torch.Tensor  # [N] long: the row's group (prompt) index in the rollout round; kept by select()
    pixel_values: torch.Tensor | None  # [sum of patches of the prompt table's images, C*t*p*p] (None: no image)
    image_grid_thw: torch.Tensor | None  # [num images of the prompt table, 3] long (t, h, w) in patches
    images_per_prompt: torch.Tensor  # [G'] long: images of each prompt of the table, in placeholder order
    suppressed_token_ids: torch.Tensor  # [S] long: token ids masked to -inf when sampling (trainer masks the same)
    finish_reason: list[FinishReason]  # [N] "stop" (end-of-turn/end-of-text sampled) or "length" (cut)
    response_text: list[str]  # [N] decoded response, special tokens removed
    examples: list[Example]  # [N] the row's source example (answer, choices) for the reward
    image_token_id: int | None = None  # <|image_pad|> id for vision models, None for text models
    sampling: SamplingParams = field(default_factory=SamplingParams)  # how the rows were sampled
    generation_seconds: float = 0.0  # wall time of the generate call that produced the batch (for tokens/s)
    tokenizer: Any = field(default=None, repr=False)  # names tokens in diagnostics (preflight); not needed otherwise

    # ------------------------------------------------------------------ shapes
    @property
    def num_rows(self) -> int:
        return self.input_ids.shape[0]

    @property
    def response_length(self) -> int:
        return self.input_ids.shape[1] - self.prompt_length

    @property
    def response_ids(self) -> torch.Tensor:
        """[N, R] long: the sampled tokens (pad after end-of-turn)."""
        return self.input_ids[:, self.prompt_length :]

    @property
    def num_vision_tokens(self) -> torch.Tensor:
        """[N] long: image placeholder tokens in each row's prompt (what the vision tower adds to the sequence)."""
        if self.image_token_id is None:
            return torch.zeros(self.num_rows, dtype=torch.long)
        prompt = self.input_ids[:, : self.prompt_length]
        return ((prompt == self.image_token_id) & (self.attention_mask[:, : self.prompt_length] != 0)).sum(dim=1)

    def row_image_grid_thw(self) -> torch.Tensor | None:
        """[images of all rows, 3] long: ``image_grid_thw`` repeated per row, in row order (for rope positions)."""
        if self.image_grid_thw is None:
            return None
        per_prompt = self._prompt_image_slices()
        rows = [self.image_grid_thw[a:b] for a, b in (per_prompt[int(p)] for p in self.row_prompt)]
        return torch.cat(rows, dim=0) if rows else self.image_grid_thw[:0]

    def _prompt_image_slices(self) -> list[tuple[int, int]]:
        """(first, end) image index of each prompt of the table."""
        ends = torch.cumsum(self.images_per_prompt, 0).tolist()
        return [(e - int(c), e) for e, c in zip(ends, self.images_per_prompt.tolist(), strict=True)]

    def _patches_per_image(self) -> torch.Tensor:
        return self.image_grid_thw.prod(dim=-1) if self.image_grid_thw is not None else torch.zeros(0)

    # ------------------------------------------------------------------ slicing and moving
    def select(self, indices: list[int] | torch.Tensor) -> RolloutBatch:
        """The rows ``indices`` (in that order) as a batch of their own, with only their prompts' images."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        idx_list = idx.tolist()
        prompts = sorted(set(self.row_prompt[idx].tolist()))
        new_prompt = {old: new for new, old in enumerate(prompts)}
        pixel_values, grid = self.pixel_values, self.image_grid_thw
        if grid is not None:
            slices = self._prompt_image_slices()
            patch_ends = torch.cumsum(self._patches_per_image(), 0).tolist()
            image_ids = [i for p in prompts for i in range(*slices[p])]
            patch_ranges = [(patch_ends[i] - int(grid[i].prod()), patch_ends[i]) for i in image_ids]
            pixel_values = (
                torch.cat([self.pixel_values[a:b] for a, b in patch_ranges]) if patch_ranges else self.pixel_values[:0]
            )
            grid = grid[image_ids] if image_ids else grid[:0]
        return replace(
            self,
            input_ids=self.input_ids[idx],
            attention_mask=self.attention_mask[idx],
            response_mask=self.response_mask[idx],
            sampler_logprobs=self.sampler_logprobs[idx],
            row_prompt=torch.tensor([new_prompt[int(p)] for p in self.row_prompt[idx]], dtype=torch.long),
            group_index=self.group_index[idx],
            pixel_values=pixel_values,
            image_grid_thw=grid,
            images_per_prompt=self.images_per_prompt[prompts] if prompts else self.images_per_prompt[:0],
            finish_reason=[self.finish_reason[i] for i in idx_list],
            response_text=[self.response_text[i] for i in idx_list],
            examples=[self.examples[i] for i in idx_list],
        )

    def padded_width(self) -> tuple[int, int]:
        """(prompt columns, response columns) that the rows need: the longest prompt and the longest response."""
        if self.num_rows == 0:
            return 0, 0
        prompt = int(self.attention_mask[:, : self.prompt_length].sum(dim=1).max())
        response = int(self.response_mask.sum(dim=1).max())
        return prompt, max(response, 1)

    def trimmed(self) -> RolloutBatch:
        """The same rows without the columns that are padding in every row: left prompt padding beyond the
        longest prompt, response padding beyond the longest response. Log-probs are unchanged (positions come from
        the attention mask), and a micro-batch computes only what its own rows need."""
        prompt, response = self.padded_width()
        start, end = self.prompt_length - prompt, self.prompt_length + response
        if start == 0 and end == self.input_ids.shape[1]:
            return self
        return replace(
            self,
            input_ids=self.input_ids[:, start:end],
            attention_mask=self.attention_mask[:, start:end],
            response_mask=self.response_mask[:, :response],
            sampler_logprobs=self.sampler_logprobs[:, :response],
            prompt_length=prompt,
        )

    def to(self, device: torch.device | str) -> RolloutBatch:
        """The batch with every tensor on ``device`` (lists and ints unchanged)."""

        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return t.to(device) if t is not None else None

        return replace(
            self,
            input_ids=move(self.input_ids),
            attention_mask=move(self.attention_mask),
            response_mask=move(self.response_mask),
            sampler_logprobs=move(self.sampler_logprobs),
            row_prompt=move(self.row_prompt),
            group_index=move(self.group_index),
            pixel_values=move(self.pixel_values),
            image_grid_thw=move(self.image_grid_thw),
            images_per_prompt=move(self.images_per_prompt),
            suppressed_token_ids=move(self.suppressed_token_ids),
        )


def concat_batches(batches: list[RolloutBatch], pad_token_id: int) -> RolloutBatch:
    """The rows of ``batches`` in order, as one batch: prompts left-padded and responses right-padded to the
    widest, prompt tables appended (``row_prompt`` shifted), groups renumbered after each other (``group_index``
    shifted past the previous batches' groups). Sampling parameters are the first batch's; times add up."""
    if not batches:
        raise ValueError("concat_batches needs at least one batch")
    if len(batches) == 1:
        return batches[0]
    prompt = max(b.prompt_length for b in batches)
    response = max(b.response_length for b in batches)

    def widen(b: RolloutBatch, t: torch.Tensor, fill) -> torch.Tensor:
        left = torch.full((b.num_rows, prompt - b.prompt_length), fill, dtype=t.dtype)
        right = torch.full((b.num_rows, response - b.response_length), fill, dtype=t.dtype)
        return torch.cat([left, t, right], dim=1)

    def right_pad(b: RolloutBatch, t: torch.Tensor, fill) -> torch.Tensor:
        return torch.cat([t, torch.full((b.num_rows, response - b.response_length), fill, dtype=t.dtype)], dim=1)

    row_prompt, group_index, prompt_offset, group_offset = [], [], 0, 0
    for b in batches:
        row_prompt.append(b.row_prompt + prompt_offset)
        group_index.append(b.group_index + group_offset)
        prompt_offset += len(b.images_per_prompt)
        group_offset += int(b.group_index.max()) + 1 if b.num_rows else 0
    grids = [b.image_grid_thw for b in batches if b.image_grid_thw is not None]
    pixels = [b.pixel_values for b in batches if b.pixel_values is not None]
    first = batches[0]
    return replace(
        first,
        input_ids=torch.cat([widen(b, b.input_ids, pad_token_id) for b in batches]),
        attention_mask=torch.cat([widen(b, b.attention_mask, 0) for b in batches]),
        response_mask=torch.cat([right_pad(b, b.response_mask, False) for b in batches]),
        sampler_logprobs=torch.cat([right_pad(b, b.sampler_logprobs, 0.0) for b in batches]),
        prompt_length=prompt,
        row_prompt=torch.cat(row_prompt),
        group_index=torch.cat(group_index),
        pixel_values=torch.cat(pixels) if pixels else None,
        image_grid_thw=torch.cat(grids) if grids else None,
        images_per_prompt=torch.cat([b.images_per_prompt for b in batches]),
        finish_reason=[r for b in batches for r in b.finish_reason],
        response_text=[t for b in batches for t in b.response_text],
        examples=[e for b in batches for e in b.examples],
        generation_seconds=sum(b.generation_seconds for b in batches),
    )
