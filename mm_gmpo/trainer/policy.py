"""The policy as one module whose forward returns response log-probs.

DeepSpeed ZeRO-3 must see every training forward through its engine (it prepares gradient accumulation there),
but the log-prob computation calls the backbone and the LM head separately. Wrapping the Hugging Face model in a
module whose ``forward`` is that whole computation lets the engine run it as one forward.
"""

from __future__ import annotations

import torch


class PolicyLogprobs(torch.nn.Module):
    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model  # the Hugging Face model (generation and saving use it directly)

    def forward(self, batch, temperature: float, chunk_size: int, **options):
        """(log-probs [N, R], entropy [N, R] or None, router loss or None) of the batch's response tokens under the
        policy: a :class:`~mm_gmpo.trainer.forward.PolicyOutputs`.

        ``policy_outputs`` of the wrapped model; ``options`` are its keywords (with_entropy, ``entropy_grad=False``:
        the entropy is only a metric, detached; min_chunks; ``packed``: the rows end to end without padding;
        ``router_aux``: a mixture-of-experts model's load-balancing loss), with its defaults.
        """
        from mm_gmpo.trainer.forward import policy_outputs

        return policy_outputs(self.model, batch, temperature=temperature, chunk_size=chunk_size, **options)


def strip_prefix(state_dict: dict[str, torch.Tensor], prefix: str = "model.") -> dict[str, torch.Tensor]:
    """The wrapped model's keys as the Hugging Face model names them."""
    return {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in state_dict.items()}
