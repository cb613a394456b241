"""Policy objectives as pure tensor functions: GMPO, its ablations, HMPO, GRPO and baselines; advantages; k3 KL.

No ``torch.distributed`` here: the trainer reduces counts across processes and passes ``denominator`` in.
See docs/algorithms.md for the formulas as implemented, the registry names and the metric names.
"""

from mm_gmpo.algorithms.advantages import group_advantages
from mm_gmpo.algorithms.aggregate import masked_count, masked_mean, masked_quantile, masked_sum, masked_var
from mm_gmpo.algorithms.kl import add_kl_penalty, kl_penalty
from mm_gmpo.algorithms.losses import (
    drgrpo_loss,
    gmpo_loss,
    gmpo_noclip_loss,
    gmpo_nonorm_loss,
    gmpo_seqclip_loss,
    grpo_loss,
    gspo_loss,
    hmpo_loss,
)
from mm_gmpo.algorithms.registry import POLICY_LOSSES, LossName, PolicyLoss, get_policy_loss

__all__ = [
    "POLICY_LOSSES",
    "LossName",
    "PolicyLoss",
    "add_kl_penalty",
    "drgrpo_loss",
    "get_policy_loss",
    "gmpo_loss",
    "gmpo_noclip_loss",
    "gmpo_nonorm_loss",
    "gmpo_seqclip_loss",
    "grpo_loss",
    "group_advantages",
    "gspo_loss",
    "hmpo_loss",
    "kl_penalty",
    "masked_count",
    "masked_mean",
    "masked_quantile",
    "masked_sum",
    "masked_var",
]
