"""The training loop (`mm-gmpo train`), top to bottom, with what it is built from.

- ``trainer.py``: ``Trainer.fit``, the loop: prompts, rollouts, rewards, advantages, the actor's passes, metrics,
  validation, checkpoints. ``setup.py`` checks the config and builds everything once; ``cli.py`` is the command.
- ``actor.py``: the :class:`~mm_gmpo.trainer.actor.Actor`, which owns the policy: its log-probs, the reference's,
  the update, the preflight comparison, save and load. It is built from ``engine.py`` (AdamW or DeepSpeed behind
  the ``Updater`` protocol), ``forward.py`` (the training forward: chunked log-probs and entropy), ``update.py``
  (one micro-batch's loss, pure), ``plan.py`` (a round's shares and micro-batches, pure), ``precision.py``,
  ``offload.py`` (the reference in host memory) and ``policy.py`` (the model as one module for DeepSpeed).
- ``dist.py``: the process group and every collective; ``metrics.py``: metrics with their reduction rule.
- Around the loop: ``batch.py`` (``TrainBatch``), ``state.py`` (counters, data order), ``checkpoint.py``,
  ``balance.py`` (tokens evened over processes), ``dynamic.py`` (dynamic sampling), ``data.py``, ``logger.py``,
  ``interrupt.py``, ``evaluation.py``/``passk.py`` (validation), ``reward_metrics.py``, ``parity.py`` (the
  sampler/trainer check on one batch), ``sft.py``/``sft_cli.py`` (the supervised warm start).
"""
