"""The benchmark's evaluation callback: :class:`AIBEvalCallback` runs the AIB evaluation protocol
(:func:`aib.evaluate`) every N vector steps and at the end of training, for any SB3 model."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback


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
