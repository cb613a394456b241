"""Policy objectives as pure tensor functions: GMPO, its ablations, HMPO, GRPO and baselines; advantages; the KL
estimators; the rollout importance correction.

No ``torch.distributed`` here: the trainer reduces counts across processes and passes ``denominator`` in.
See docs/algorithms.md for the formulas as implemented, the registry names and the metric names.
"""

import sys

from mm_gmpo.algorithms.advantages import group_advantages
from mm_gmpo.algorithms.aggregate import masked_count, masked_mean, masked_quantile, masked_sum, masked_var
from mm_gmpo.algorithms.kl import KL_ESTIMATORS, add_kl_penalty, kl_penalty, sequence_kl
from mm_gmpo.algorithms.losses import (  # importing losses registers them
    drgrpo_loss,
    gmpo_loss,
    gmpo_noclip_loss,
    gmpo_nonorm_loss,
    gmpo_seqclip_loss,
    grpo_loss,
    gspo_loss,
    hmpo_loss,
)
from mm_gmpo.algorithms.registry import POLICY_LOSSES, PolicyLoss, get_policy_loss, loss_names, register_loss
from mm_gmpo.algorithms.rollout_is import RolloutIS, corrected, rollout_is_stats

if sys.version_info >= (3, 11):
    from enum import StrEnum
else:  # Python 3.10
    from enum import Enum

    class StrEnum(str, Enum):
        def __str__(self) -> str:
            return str(self.value)


# The registered names as an enum (derived from the registry, for code that likes attributes: LossName.GMPO)
LossName = StrEnum("LossName", {name.upper(): name for name in loss_names()})

__all__ = [
    "KL_ESTIMATORS",
    "POLICY_LOSSES",
    "LossName",
    "PolicyLoss",
    "RolloutIS",
    "add_kl_penalty",
    "corrected",
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
    "loss_names",
    "masked_count",
    "masked_mean",
    "masked_quantile",
    "masked_sum",
    "masked_var",
    "register_loss",
    "rollout_is_stats",
    "sequence_kl",
]
