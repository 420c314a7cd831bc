"""Callbacks of sb3-dmash.

:class:`DynamicsAlignmentCallback` runs the auxiliary dynamics-prediction loss that trains the context encoder and the
hypernetwork. ``DMASHSAC.learn()`` attaches it by itself; pass your own instance (or a subclass with another
self-supervised objective) in ``callback=`` to replace it.

:class:`AIBEvalCallback` runs the AIB evaluation protocol (:func:`aib.evaluate`) every N vector steps and at the end of
training, for any SB3 model.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

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

    - With ``DMASHSAC`` (which attaches it by itself), each update's batch is handed on to ``train()``, so the
      dynamics, critic and actor updates of a round use the same batch, as in the reference. With ``train_freq=1``
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
                f"(context_source={policy.context_source!r}, fm_merge={policy.context_kwargs['fm_merge']!r})"
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
        schedule = model.lr_schedule if self._sb3_route else model.context_lr_schedule
        lr = schedule(model._current_progress_remaining)
        update_learning_rate(context.optimizer, lr)
        losses, batches = [], []
        guard = self._get_guard()
        for _ in range(gradient_steps):
            data = model.replay_buffer.sample(model.batch_size, env=model._vec_normalize_env)
            if self._sb3_route:
                obs = data.observations[:, : policy.obs_dim]  # packed: [s, window]
                next_obs = data.next_observations[:, : policy.obs_dim]
                window = data.history[:, 1:]
            else:
                batches.append(data)
                obs, next_obs, window = data.observations, data.next_observations, model.context_window(data)
            loss = context.dynamics_loss(obs, data.actions, next_obs, window)
            context.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            context.optimizer.step()
            guard.observe("dynamics_loss", loss)
            losses.append(loss.item())
            if guard.end_round():
                self.check_finite()
        if not self._sb3_route:
            model.shared_batches = batches  # the coming train() reuses them (replaced, never accumulated)
        self.logger.record("train/dynamics_loss", float(np.mean(losses)))
        self.logger.record("train/context_learning_rate", lr)


class AIBEvalCallback(BaseCallback):
    """The AIB evaluation protocol during training (``docs/protocol.md`` §1): :func:`aib.evaluate` every ``eval_every``
    vector steps.

    Steps are counted in **vector steps** (one ``step`` of all sub-envs, the paper's unit) from the end of the random
    phase: learning step ``j = num_timesteps // n_envs - learning_starts``. The callback evaluates at ``j = 0,
    eval_every, 2 eval_every, ...`` right after the update round that reached ``j`` (in ``_on_rollout_start``, which
    fires after the previous ``train()``), and once more at the end of training (unless that step was just evaluated).
    With ``schedule="final2"`` it evaluates only at ``total - eval_every`` and at the end (the two points the score
    needs, ``docs/protocol.md`` §3).

    Each evaluation logs ``eval/<split>/aer`` and ``eval/<split>/mean_reward`` (the same number: the mean over the
    split's contexts of the mean return per context) and ``eval/<split>/context_<i>`` (not printed to stdout), then
    dumps the logger. Every split of every evaluation becomes one record in :attr:`records`::

        {"split", "step", "vector_step", "timesteps", "aer", "mean_reward", "n_episodes", "per_context": [20 floats],
         **extra_fields}

    and, with ``results_path``, one JSON line appended to that file.

    :param env_id: the AIB id the model trains on.
    :param eval_every: vector steps between evaluations (the paper's 5,000).
    :param splits: the splits evaluated (``"train"`` is the paper's eval_train).
    :param n_episodes: scored episodes per context (the protocol's 10; 5 reproduces the reference code).
    :param warmup: the K-step warm-up before each scored episode.
    :param eval_seed: reset seed base (default ``1_000_000 + model.seed``, see :func:`aib.evaluate`).
    :param env_kwargs: env kwargs of the evaluation envs (default: ``context_aware=True`` for the methods that read
        the true context).
    :param learning_starts: vector steps of the random phase (default: ``model.learning_starts // n_envs``).
    :param schedule: ``"every"`` (the paper's) or ``"final2"``.
    :param results_path: a JSON-lines file to append the records to.
    :param extra_fields: constant fields added to every record (run id, method, seed...).
    :param vec_env_cls: VecEnv class of the evaluation env (``DummyVecEnv`` by default).
    :param callback_after_eval: a callback whose ``on_step`` runs after each evaluation (as in SB3's ``EvalCallback``),
        with this callback as its ``parent``; ``sb3-dmash bench`` checkpoints the run there.
    :param invert_at: evaluate with the fault protocol: the actions are inverted from this step of each scored episode
        on (:func:`aib.evaluate`); the records then also hold the returns before and after the fault, the recovery time
        and the mean reward trace around the fault.
    :param verbose: 1 prints each evaluation's AER.
    """

    SCHEDULES = ("every", "final2")

    def __init__(
        self,
        env_id: str,
        eval_every: int = 5_000,
        splits: Sequence[str] = ("train", "eval_in", "eval_out"),
        n_episodes: int = 10,
        warmup: bool = True,
        eval_seed: int | None = None,
        env_kwargs: dict[str, Any] | None = None,
        learning_starts: int | None = None,
        schedule: str = "every",
        results_path: str | os.PathLike | None = None,
        extra_fields: Mapping[str, Any] | None = None,
        vec_env_cls: type | None = None,
        callback_after_eval: BaseCallback | None = None,
        invert_at: int | None = None,
        verbose: int = 0,
    ) -> None:
        super().__init__(verbose)
        if isinstance(eval_every, bool) or not isinstance(eval_every, (int, np.integer)) or eval_every < 1:
            raise ValueError(f"eval_every={eval_every!r} must be an integer >= 1 (vector steps)")
        if schedule not in self.SCHEDULES:
            raise ValueError(f"schedule={schedule!r} is not allowed; expected one of {self.SCHEDULES}")
        self.env_id = env_id
        self.eval_every = int(eval_every)
        self.splits = tuple(splits)
        self.n_episodes = n_episodes
        self.warmup = warmup
        self.eval_seed = eval_seed
        self.env_kwargs = env_kwargs
        self.learning_starts = learning_starts
        self.schedule = schedule
        self.results_path = None if results_path is None else os.fspath(results_path)
        self.extra_fields = dict(extra_fields or {})
        self.vec_env_cls = vec_env_cls
        self.callback_after_eval = callback_after_eval
        self.invert_at = invert_at
        if callback_after_eval is not None:
            callback_after_eval.parent = self
        self.records: list[dict[str, Any]] = []
        self.evaluated_steps: list[int] = []
        self._vec_env: Any = None
        self._next_step = 0

    # ------------------------------------------------------------------ schedule
    def _learning_starts(self) -> int:
        if self.learning_starts is not None:
            return int(self.learning_starts)
        # on-policy models (RecurrentPPO) have no random phase
        return int(getattr(self.model, "learning_starts", 0)) // self.model.n_envs

    def learning_step(self) -> int:
        """Vector steps since the end of the random phase (negative during it)."""
        return int(self.num_timesteps) // self.model.n_envs - self._learning_starts()

    def _total_steps(self) -> int:
        return int(self.model._total_timesteps) // self.model.n_envs - self._learning_starts()

    def _init_callback(self) -> None:
        from aib.evaluation import _default_env_kwargs

        if self.env_kwargs is None:
            self.env_kwargs = _default_env_kwargs(self.model)
        self._eval_vec_env()
        if self.callback_after_eval is not None:
            self.callback_after_eval.init_callback(self.model)
        # The next evaluation point, after those already done (restored from a checkpoint, see restore())
        last = self.evaluated_steps[-1] if self.evaluated_steps else None
        if self.schedule == "final2":
            first = max(0, self._total_steps() - self.eval_every)
            self._next_step = first if last is None or last < first else self._total_steps()
        else:
            self._next_step = 0 if last is None else (last // self.eval_every + 1) * self.eval_every

    def restore(self, records: Sequence[Mapping[str, Any]], evaluated_steps: Sequence[int]) -> None:
        """Continue the history of a resumed run: its records and evaluated steps (before ``learn()``)."""
        self.records = [dict(r) for r in records]
        self.evaluated_steps = [int(s) for s in evaluated_steps]

    def _on_rollout_start(self) -> None:
        step = self.learning_step()
        if step >= self._next_step:
            self.evaluate_now()
            if self.schedule == "final2":
                self._next_step = self._total_steps()  # the final point is left to _on_training_end
            else:
                self._next_step = (step // self.eval_every + 1) * self.eval_every

    def _on_step(self) -> bool:
        return True

    def _on_training_end(self) -> None:
        step = self.learning_step()
        if step >= 0 and (not self.evaluated_steps or self.evaluated_steps[-1] != step):
            self.evaluate_now()
        if self._vec_env is not None:
            self._vec_env.close()
            self._vec_env = None

    # ------------------------------------------------------------------ evaluation
    def _eval_vec_env(self) -> Any:
        """The evaluation VecEnv, built once and reused by every evaluation (closed at the end of training)."""
        from aib.evaluation import make_eval_vec_env

        if self._vec_env is None:
            env_kwargs = dict(self.env_kwargs or {})
            if self.invert_at is not None:
                env_kwargs["invert_at"] = self.invert_at
            self._vec_env = make_eval_vec_env(self.env_id, self.splits, env_kwargs, self.vec_env_cls)
        return self._vec_env

    def evaluate_now(self) -> list[dict[str, Any]]:
        """Run the protocol at the current step; log, keep and (optionally) append its records."""
        from aib.evaluation import evaluate

        check_finite = getattr(self.model, "check_finite", None)
        if check_finite is not None:  # a diverged model fails here, naming the loss, rather than on its NaN actions
            check_finite()

        results = evaluate(
            self.model,
            self.env_id,
            splits=self.splits,
            n_episodes=self.n_episodes,
            warmup=self.warmup,
            eval_seed=self.eval_seed,
            env_kwargs=self.env_kwargs,
            vec_env=self._eval_vec_env(),
            progress=self.verbose >= 1,
            invert_at=self.invert_at,
        )
        step = self.learning_step()
        new = []
        for split, result in results.items():
            record = {
                "split": split,
                "step": step,
                "vector_step": int(self.num_timesteps) // self.model.n_envs,
                "timesteps": int(self.num_timesteps),
                **result.to_record(),
                **self.extra_fields,
            }
            new.append(record)
            self.logger.record(f"eval/{split}/aer", result.aer)
            self.logger.record(f"eval/{split}/mean_reward", result.mean_reward)
            for i, value in enumerate(result.per_context):
                self.logger.record(f"eval/{split}/context_{i}", float(value), exclude=("stdout",))
            if self.verbose >= 1:
                print(f"AIB eval step {step} ({self.num_timesteps} timesteps) {split}: AER {result.aer:.2f}")
        self.logger.record("time/total_timesteps", int(self.num_timesteps), exclude="tensorboard")
        self.logger.dump(self.num_timesteps)
        self.records.extend(new)
        self.evaluated_steps.append(step)
        if self.results_path is not None:
            lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in new)
            with open(self.results_path, "a", encoding="utf-8") as f:
                f.write(lines)
                f.flush()
        if self.callback_after_eval is not None:
            self.callback_after_eval.on_step()
        return new

    def best_of_last_two(self) -> dict[str, float]:
        """Per split, the maximum AER of the last two evaluations: the per-run score of ``docs/protocol.md`` §3."""
        last = self.evaluated_steps[-2:]
        out: dict[str, float] = {}
        for split in self.splits:
            values = [r["aer"] for r in self.records if r["split"] == split and r["step"] in last]
            if values:
                out[split] = float(max(values))
        return out
