"""The update's input: rollout rows together with what the trainer computed for them.

Advantages and old/reference log-probs are row-aligned with the rollout batch, so they travel with it: one
``select`` takes the same rows of all of them and one ``to(device)`` moves all of them. Nothing in the update
indexes a loose tensor by hand, so nothing can be left behind on the CPU while the policy runs on a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mm_gmpo.rollout.types import RolloutBatch


@dataclass
class TrainBatch:
    """N rows of a rollout round, R response tokens (the rollout's response width)."""

    rollout: RolloutBatch  # tokens, masks, images, sampler log-probs
    advantages: torch.Tensor  # [N] float32: one per response (group-normalised reward)
    old_logprobs: torch.Tensor | None  # [N, R] float32: the policy before this round's updates; None: on-policy
    ref_logprobs: torch.Tensor | None  # [N, R] float32: the frozen reference (KL term); None: no KL

    def __post_init__(self) -> None:
        n, width = self.rollout.num_rows, self.rollout.response_length
        if self.advantages.shape != (n,):
            raise ValueError(f"advantages must be [{n}], got {tuple(self.advantages.shape)}")
        for name in ("old_logprobs", "ref_logprobs"):
            value = getattr(self, name)
            if value is not None and value.shape != (n, width):
                raise ValueError(f"{name} must be [{n}, {width}], got {tuple(value.shape)}")

    @property
    def num_rows(self) -> int:
        return self.rollout.num_rows

    @property
    def response_mask(self) -> torch.Tensor:
        return self.rollout.response_mask

    @property
    def device(self) -> torch.device:
        return self.rollout.input_ids.device

    def select(self, indices: list[int] | torch.Tensor) -> TrainBatch:
        """The rows ``indices`` (in that order) of everything."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        rollout = self.rollout.select(idx)

        def take(t: torch.Tensor | None) -> torch.Tensor | None:
            return t[idx.to(t.device)] if t is not None else None

        return TrainBatch(rollout, take(self.advantages), take(self.old_logprobs), take(self.ref_logprobs))

    def trimmed(self) -> TrainBatch:
        """Without the columns that are padding in every row (see ``RolloutBatch.trimmed``)."""
        rollout = self.rollout.trimmed()
        width = rollout.response_length

        def cut(t: torch.Tensor | None) -> torch.Tensor | None:
            return t[:, :width] if t is not None else None

        return TrainBatch(rollout, self.advantages, cut(self.old_logprobs), cut(self.ref_logprobs))

    def to(self, device: torch.device | str) -> TrainBatch:
        """Every tensor on ``device``."""

        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return t.to(device) if t is not None else None

        return TrainBatch(
            self.rollout.to(device), move(self.advantages), move(self.old_logprobs), move(self.ref_logprobs)
        )
