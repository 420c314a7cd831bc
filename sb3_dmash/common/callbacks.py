"""Callbacks of sb3-dmash.

:class:`DynamicsAlignmentCallback` runs the auxiliary dynamics-prediction loss that trains the context encoder and the
hypernetwork. ``DMASHSAC.learn()`` attaches it by itself; pass your own instance (or a subclass with another
self-supervised objective) in ``callback=`` to replace it.
"""

from __future__ import annotations

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.utils import update_learning_rate


class DynamicsAlignmentCallback(BaseCallback):
    """Trains the encoder, the hypernetwork and the forward model on the dynamics loss.

    It runs at the end of each rollout, right before ``train()``, and does exactly as many updates as ``train()``
    will do gradient steps (``gradient_steps``, or one per collected transition when it is -1), each on its own
    batch from the replay buffer. With ``train_freq=1`` and ``gradient_steps=1`` each vector step therefore runs
    dynamics update -> critic -> actor, the reference's order. Calling ``model.train()`` by hand updates only the RL
    losses.

    Logs ``train/dynamics_loss`` and ``train/context_learning_rate``.

    :param verbose: verbosity level.
    """

    def __init__(self, verbose: int = 0) -> None:
        super().__init__(verbose)
        self._n_steps = 0

    def _on_rollout_start(self) -> None:
        self._n_steps = 0

    def _on_step(self) -> bool:
        self._n_steps += 1
        return True

    def _on_rollout_end(self) -> None:
        model = self.model
        if not (model.num_timesteps > 0 and model.num_timesteps > model.learning_starts):
            return
        gradient_steps = model.gradient_steps if model.gradient_steps >= 0 else self._n_steps * model.n_envs
        if gradient_steps > 0:
            self.update(gradient_steps)

    def update(self, gradient_steps: int) -> None:
        """Do ``gradient_steps`` dynamics updates on batches of ``model.batch_size``."""
        model = self.model
        context = model.policy.context
        lr = model.context_lr_schedule(model._current_progress_remaining)
        update_learning_rate(context.optimizer, lr)
        losses = []
        for _ in range(gradient_steps):
            data = model.replay_buffer.sample(model.batch_size, env=model._vec_normalize_env)
            loss = context.dynamics_loss(data.observations, data.actions, data.next_observations, model.context_window(data))
            context.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            context.optimizer.step()
            losses.append(loss.item())
        self.logger.record("train/dynamics_loss", float(np.mean(losses)))
        self.logger.record("train/context_learning_rate", lr)
