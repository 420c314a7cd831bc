"""The algorithm's callback: :class:`DynamicsAlignmentCallback` runs the auxiliary dynamics-prediction loss that trains
the context encoder, the hypernetwork and the forward model. ``DMASHSAC.learn()`` attaches it by itself; pass your own
instance (or a subclass with another self-supervised objective) in ``callback=`` to replace it. With SB3's ``SAC`` it
is what makes ``DMASHPolicy`` train.

The evaluation callback of the benchmark is :class:`sb3_dmash.experiments.callbacks.AIBEvalCallback`.
"""

from __future__ import annotations

import warnings

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.utils import update_learning_rate

from sb3_dmash.common.divergence import FiniteGuard
from sb3_dmash.common.windows import normalize_window


class DynamicsAlignmentCallback(BaseCallback):
    """Trains the encoder, the hypernetwork and the forward model of a :class:`~sb3_dmash.DMASHPolicy` on the dynamics
    loss, with :class:`~sb3_dmash.DMASHSAC` or with SB3's own ``SAC``.

    It runs at the end of each rollout, right before ``train()``, and does exactly as many updates as ``train()``
    will do gradient steps (``gradient_steps``, or one per collected transition when it is -1).

    - With ``DMASHSAC`` (which attaches it by itself), the updates use the batches of the coming update rounds
      (``DMASHSAC.draw_round_batches``), so the dynamics, critic and actor updates of a round use the same batch, as
      in the reference. With ``train_freq=1``
      and ``gradient_steps=1`` each vector step runs dynamics update -> critic -> actor, the reference's order.
    - With SB3's ``SAC`` (``SAC(DMASHPolicy, env, replay_buffer_class=HistoryReplayBuffer)``), it makes the
      policy usable by SAC's own update: the buffer packs each sampled observation with its window (``pack_windows``),
      so ``SAC.train()`` hands the windows to the actor and the critics, and the policy acts on the rollout's real
      windows while SAC collects. The dynamics updates draw their own batches and use SAC's learning rate.

    Logs ``train/dynamics_loss`` and ``train/context_learning_rate``. A non-finite dynamics loss or forward-model,
    encoder or hypernetwork parameter stops training with a
    :class:`~sb3_dmash.common.divergence.DivergenceError` (read every ``model.finite_check_interval`` updates, 100 by
    default, and at the end of training).

    :param verbose: verbosity level.
    """

    def __init__(self, verbose: int = 0) -> None:
        super().__init__(verbose)
        self._n_steps = 0
        self._guard: FiniteGuard | None = None

    @property
    def _sb3_route(self) -> bool:
        """Whether the model is not a DMASHSAC (which shares its batches and keeps its own rollout window)."""
        from sb3_dmash.dmash.dmash_sac import DMASHSAC

        return not isinstance(self.model, DMASHSAC)

    def _init_callback(self) -> None:
        self._guard = None  # a fresh record for each learn(), numbered from the model's update rounds
        if self._sb3_route:
            self._check_sb3_model()

    def _check_sb3_model(self) -> None:
        from sb3_dmash.common.buffers import HistoryReplayBuffer
        from sb3_dmash.dmash.policies import DMASHPolicy

        model, name = self.model, type(self.model).__name__
        policy = getattr(model, "policy", None)
        if not isinstance(policy, DMASHPolicy):
            raise ValueError(f"DynamicsAlignmentCallback trains a DMASHPolicy; {name}'s policy is {type(policy).__name__}")
        if policy.context is None or not policy.context.has_forward_model:
            raise ValueError(
                "DynamicsAlignmentCallback: this DMASHPolicy has no forward model to train "
                f"(context_source={policy.routing.source!r}, fm_merge={policy.routing.fm_merge!r})"
            )
        buffer = getattr(model, "replay_buffer", None)
        if not isinstance(buffer, HistoryReplayBuffer):
            raise ValueError(
                f"DynamicsAlignmentCallback: {name}'s replay buffer is {type(buffer).__name__}, which keeps no context "
                f"windows; pass replay_buffer_class=HistoryReplayBuffer to {name}"
            )
        from sb3_dmash.dmash.dmash_sac import _aib_history_len

        env_k = _aib_history_len(model.get_env())
        if env_k is not None and env_k != policy.history_len:
            warnings.warn(
                f"the AIB env's window length is K={env_k} but the policy's history_len={policy.history_len}; pass "
                f"policy_kwargs=dict(history_len={env_k}) and replay_buffer_kwargs=dict(history_len={env_k}) for the "
                "paper's setting (DMASHSAC reads K from the env by itself)",
                stacklevel=2,
            )
        if buffer.history_len != policy.history_len:
            raise ValueError(
                f"the replay buffer's history_len={buffer.history_len} differs from the policy's "
                f"history_len={policy.history_len}; pass the same K in replay_buffer_kwargs and policy_kwargs"
            )

    def _on_training_start(self) -> None:
        if not self._sb3_route:
            return
        model, buffer, policy = self.model, self.model.replay_buffer, self.model.policy
        if self.locals.get("reset_num_timesteps", False):
            buffer.restart_rollout_windows()  # SB3 has just reset the env
        buffer.pack_windows = True
        vec_normalize = model.get_vec_normalize_env()

        def rollout_windows(obs: np.ndarray) -> np.ndarray | None:
            # Only for the observations the rollout is at (SAC's own predict call); any other call acts as usual.
            current = model._last_obs
            if current is None or np.shape(current)[0] != obs.shape[0]:
                return None
            if not np.array_equal(np.asarray(current, dtype=np.float32).reshape(obs.shape), obs):
                return None
            raw = model._last_original_obs if vec_normalize is not None else current
            window = buffer.rollout_windows(raw)
            if vec_normalize is not None:
                window = normalize_window(window, vec_normalize.normalize_obs, policy.obs_dim)
            return window

        policy.rollout_windows = rollout_windows

    def _get_guard(self) -> FiniteGuard:
        if self._guard is None:
            self._guard = FiniteGuard("the dynamics-alignment update", ("dynamics_loss",), first_round=self.model._n_updates)
        self._guard.check_every = getattr(self.model, "finite_check_interval", 100)
        return self._guard

    def check_finite(self) -> None:
        """Raise :class:`~sb3_dmash.common.divergence.DivergenceError` if a dynamics loss was not finite or a parameter of
        the context module (encoder, hypernetwork, forward model) is not finite now."""
        if self._guard is not None:
            self._guard.check(self.model.policy.context.named_parameters(prefix="context"))

    def _on_training_end(self) -> None:
        if self._sb3_route:
            self.model.policy.rollout_windows = None
        self.check_finite()

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
        policy = model.policy
        context = policy.context
        if self._sb3_route:  # SB3's SAC: batches of our own, SAC's learning rate
            lr = model.lr_schedule(model._current_progress_remaining)
            batches = [
                model.replay_buffer.sample(model.batch_size, env=model.get_vec_normalize_env()) for _ in range(gradient_steps)
            ]
        else:  # DMASHSAC: the batches its coming update rounds use too
            lr = model.current_context_learning_rate()
            batches = model.draw_round_batches(gradient_steps)
        update_learning_rate(context.optimizer, lr)
        losses = []
        guard = self._get_guard()
        for data in batches:
            if self._sb3_route:
                obs = data.observations[:, : policy.obs_dim]  # packed: [s, window]
                next_obs = data.next_observations[:, : policy.obs_dim]
                window = data.history[:, 1:]
            else:
                obs, next_obs, window = data.observations, data.next_observations, model.context_window(data)
            loss = context.dynamics_loss(obs, data.actions, next_obs, window)
            context.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            context.optimizer.step()
            guard.observe("dynamics_loss", loss)
            losses.append(loss.item())
            if guard.end_round():
                self.check_finite()
        self.logger.record("train/dynamics_loss", float(np.mean(losses)))
        self.logger.record("train/context_learning_rate", lr)
