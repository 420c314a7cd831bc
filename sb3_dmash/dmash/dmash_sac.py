"""DMA*-SH: Soft Actor-Critic with a context inferred from the last K transitions and shared hypernetwork adapters.

Benad et al. 2026, "Dynamics-Aligned Shared Hypernetworks for Zero-Shot Actuator Inversion", arXiv 2602.06550.
Structured like SB3's ``sac.py`` (and sb3-contrib's TQC): the differences are the context window (replay buffer,
rollout ring, stateful ``predict``), the adapter weights passed to every network, the reference's update schedule
(critic every round, the actor twice every second round) and the dynamics loss, which runs in a callback.
"""

from __future__ import annotations

import io
import pathlib
import warnings
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, ConvertCallback
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import FloatSchedule, get_parameters_by_name, update_learning_rate
from stable_baselines3.common.vec_env import VecEnv
from torch.nn import functional as F

from sb3_dmash.common.buffers import HistoryReplayBuffer, StratifiedReplayBuffer
from sb3_dmash.common.callbacks import DynamicsAlignmentCallback
from sb3_dmash.common.divergence import FiniteGuard
from sb3_dmash.common.save_util import check_saved_model
from sb3_dmash.common.type_aliases import HistoryReplayBufferSamples
from sb3_dmash.common.windows import normalize_window
from sb3_dmash.dmash.policies import DMASHPolicy, MlpPolicy
from sb3_dmash.dmash.presets import resolve_method
from sb3_dmash.dmash.routing import ContextRouting

SelfDMASHSAC = TypeVar("SelfDMASHSAC", bound="DMASHSAC")

HISTORY_ALIGNMENTS = ("reference", "causal")
DEFAULT_HISTORY_LEN = 24
FINITE_CHECK_INTERVAL = 100
"""Update rounds between two reads of the losses' non-finite record (one host synchronisation each)."""


def _aib_history_len(env: VecEnv | None) -> int | None:
    """K from the AIB metadata of the env's id, if the env is an AIB environment."""
    if env is None:
        return None
    try:
        spec = env.get_attr("spec", indices=[0])[0]
    except Exception:
        return None
    env_id = getattr(spec, "id", None)
    if not isinstance(env_id, str) or not env_id.startswith("AIB-"):
        return None
    from aib.registration import env_info

    try:
        return env_info(env_id).history_len
    except ValueError:
        return None


class DMASHSAC(OffPolicyAlgorithm):
    """DMA*-SH: SAC whose actor and critics are modulated by adapter weights generated from an inferred context.

    A context encoder reads the last ``history_len`` transitions ``(s, a, s' - s)`` and infers z; one hypernetwork
    turns z into adapter weights shared by the forward model, the actor and the critics. The encoder and the
    hypernetwork are trained only by the forward model's dynamics-prediction loss
    (:class:`~sb3_dmash.common.callbacks.DynamicsAlignmentCallback`, which ``learn()`` attaches); the RL losses see
    the weights detached.

    Units: as in SB3, ``total_timesteps``, ``learning_starts``, ``buffer_size`` and ``batch_size`` count transitions.
    With ``n_envs`` sub-envs, ``train_freq=1`` and ``gradient_steps=1`` do one update round per vector step, as the
    paper (whose budgets count vector steps of 20 sub-envs).

    The defaults follow the paper's reference implementation, not SB3's SAC (see ``docs/algorithm.md``): critic
    learning rate 1e-3, entropy coefficient starting at 1.0 with learning rate 1e-3, two actor updates every second
    round, summed critic losses, time limits treated as terminal, K deterministic warm-up steps before each training
    episode.

    :param policy: the policy (``"MlpPolicy"`` or :class:`~sb3_dmash.dmash.policies.DMASHPolicy`).
    :param env: the environment (a gymnasium id, an env or a VecEnv); AIB envs give their window length K.
    :param learning_rate: actor learning rate (value or schedule).
    :param buffer_size: replay buffer size in transitions.
    :param learning_starts: transitions of uniform random actions before learning starts.
    :param batch_size: minibatch size; stratified over sub-envs (``batch_size // n_envs`` per sub-env).
    :param tau: Polyak coefficient of the target critics.
    :param gamma: discount factor.
    :param train_freq: collect this many steps (or ``(n, "step")``) between update rounds.
    :param gradient_steps: update rounds after each collection (-1: one per collected transition).
    :param action_noise: optional extra action noise.
    :param replay_buffer_class: replay buffer class (default :class:`~sb3_dmash.common.buffers.HistoryReplayBuffer` for
        the methods that infer the context, :class:`~sb3_dmash.common.buffers.StratifiedReplayBuffer` for the others).
    :param replay_buffer_kwargs: its kwargs (``history_len`` is set here; ``handle_timeout_termination`` defaults to
        False: time limits are terminal, as the reference).
    :param optimize_memory_usage: SAC's memory-efficient replay buffer: each observation stored once (see
        :class:`~sb3_dmash.common.buffers.HistoryReplayBuffer`).
    :param n_steps: SAC's n-step returns: only 1 (one-step transitions, as the reference).
    :param critic_learning_rate: critics' learning rate (value or schedule).
    :param context_learning_rate: learning rate of the encoder, hypernetwork and forward model.
    :param ent_coef: entropy coefficient, ``"auto"`` / ``"auto_<init>"`` to learn it (default starts at 1.0), or a
        fixed float.
    :param ent_coef_learning_rate: learning rate of the entropy coefficient.
    :param target_entropy: target entropy (``"auto"``: ``-dim(A)``).
    :param target_update_interval: Polyak update every this many update rounds.
    :param policy_delay: actor (and entropy) updates happen on every ``policy_delay``-th round.
    :param actor_updates: number of consecutive actor (and entropy) updates on those rounds.
    :param critic_loss_scale: factor of the summed critic MSEs (1.0 as the reference; SB3 uses 0.5).
    :param history_len: window length K (``None``: the AIB env's metadata, else 24).
    :param history_alignment: ``"reference"`` (the training window ends with the sampled transition, as the
        reference) or ``"causal"`` (it ends at ``s_t``, as at acting time; the TD target then uses the window ending
        at ``s_{t+1}``).
    :param context_warmup: run K deterministic, eval-mode steps in the same contexts before each training episode
        once learning has started (the reference's warm-up; needs synchronised episode ends).
    :param method: the method of the paper's comparison: ``"dmash"`` (DMA*-SH, default), ``"dma_star"`` (DMA*),
        ``"dma"`` (DMA), ``"dma_pearl"`` (DMA-Pearl), ``"concat"`` (Concat), ``"decision_adapter"`` (Decision
        Adapter), ``"dr"`` (context-unaware SAC). ``"concat"`` and ``"decision_adapter"`` read the true context, so
        they need envs made with ``context_aware=True``. See ``docs/presets.md``.
    :param reuse_rl_context: opt-in approximation for speed: infer z (and the adapter weights) once per update round
        and share it between the critic update and the actor updates, instead of a fresh z for each loss as the
        reference does (see ``docs/performance.md``). It has no effect with ``actor_detach=False``, where the actor
        loss needs its own z with gradient.
    :param input_mask_prob: ablation: encoder input masking probability (``None``: the method's).
    :param input_norm: ablation: encoder input norm, ``"avg_l1"``, ``"layer"`` or ``"none"`` (``None``: the method's).
    :param output_norm: ablation: encoder output norm, ``"simnorm"``, ``"layer"`` or ``"none"`` (``None``: the
        method's).
    :param shared_hypernet: ablation: ``False`` gives the forward model, the actor and each critic their own
        hypernetwork (DMA*-H; the actor's and critics' trained by their RL losses).
    :param dynamics_alignment: ablation: ``False`` removes the forward model; the encoder is then trained by the
        critic loss (DMA*-H, RL only, with ``shared_hypernet=False``).
    :param actor_detach: ablation: ``False`` lets the actor loss reach the encoder and the shared hypernetwork (the
        paper's collapse finding).
    :param critic_detach: ablation: the same for the critic loss.
    :param use_sde: generalized State-Dependent Exploration (gSDE) instead of action noise, on the adapted actor
        (SB3's semantics; ``policy_kwargs`` ``log_std_init``, ``use_expln`` and ``clip_mean`` configure it).
    :param sde_sample_freq: sample new gSDE noise every n steps while collecting (-1: only at the start of each
        rollout).
    :param use_sde_at_warmup: collect the ``learning_starts`` transitions with gSDE instead of uniform random actions.
    :param stats_window_size: window of the rollout statistics.
    :param tensorboard_log: tensorboard log directory.
    :param policy_kwargs: policy kwargs (see :class:`~sb3_dmash.dmash.policies.DMASHPolicy`).
    :param verbose: verbosity level.
    :param seed: random seed.
    :param device: ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.
    :param _init_setup_model: build the networks at construction.
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"MlpPolicy": MlpPolicy}
    policy: DMASHPolicy
    replay_buffer: HistoryReplayBuffer

    def __init__(
        self,
        policy: str | type[DMASHPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 3e-4,
        buffer_size: int = 1_000_000,
        learning_starts: int = 100,
        batch_size: int = 256,
        tau: float = 0.005,
        gamma: float = 0.99,
        train_freq: int | tuple[int, str] = 1,
        gradient_steps: int = 1,
        action_noise: ActionNoise | None = None,
        replay_buffer_class: type[ReplayBuffer] | None = None,
        replay_buffer_kwargs: dict[str, Any] | None = None,
        optimize_memory_usage: bool = False,
        n_steps: int = 1,
        critic_learning_rate: float | Schedule = 1e-3,
        context_learning_rate: float | Schedule = 3e-4,
        ent_coef: str | float = "auto_1.0",
        ent_coef_learning_rate: float | Schedule = 1e-3,
        target_entropy: str | float = "auto",
        target_update_interval: int = 1,
        policy_delay: int = 2,
        actor_updates: int = 2,
        critic_loss_scale: float = 1.0,
        history_len: int | None = None,
        history_alignment: str = "reference",
        context_warmup: bool = True,
        method: str = "dmash",
        reuse_rl_context: bool = False,
        input_mask_prob: float | None = None,
        input_norm: str | None = None,
        output_norm: str | None = None,
        shared_hypernet: bool | None = None,
        dynamics_alignment: bool | None = None,
        actor_detach: bool | None = None,
        critic_detach: bool | None = None,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        use_sde_at_warmup: bool = False,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        # SB3 would say "Policy MultiInputPolicy unknown", or, for a Dict space, recommend that policy
        if policy == "MultiInputPolicy" or isinstance(getattr(env, "observation_space", None), spaces.Dict):
            raise ValueError(
                "DMASHSAC takes flat Box observations; Dict observation spaces are not supported (MultiInputPolicy "
                "does not exist for DMASHSAC). Flatten them with gymnasium.wrappers.FlattenObservation and use "
                "policy='MlpPolicy'"
            )
        if isinstance(policy, str) and policy not in self.policy_aliases:
            raise ValueError(f"policy={policy!r} is unknown; expected one of {list(self.policy_aliases)} or a DMASHPolicy")
        if history_alignment not in HISTORY_ALIGNMENTS:
            raise ValueError(f"history_alignment={history_alignment!r} is not allowed; expected one of {HISTORY_ALIGNMENTS}")
        if history_len is not None and (
            isinstance(history_len, bool) or not isinstance(history_len, (int, np.integer)) or history_len < 1
        ):
            raise ValueError(f"history_len={history_len!r} must be an integer >= 1 (or None for the env's default)")
        for name, value in (("policy_delay", policy_delay), ("actor_updates", actor_updates)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name}={value!r} must be an integer >= 1")
        policy_kwargs = resolve_method(
            method,
            policy_kwargs,
            input_mask_prob=input_mask_prob,
            input_norm=input_norm,
            output_norm=output_norm,
            shared_hypernet=shared_hypernet,
            dynamics_alignment=dynamics_alignment,
            actor_detach=actor_detach,
            critic_detach=critic_detach,
        )
        replay_buffer_kwargs = dict(replay_buffer_kwargs or {})
        if n_steps != 1:
            raise ValueError(
                f"n_steps={n_steps!r}: n-step returns are not supported (the reference and the history buffer use "
                "one-step transitions); use n_steps=1"
            )
        super().__init__(
            policy,
            env,
            learning_rate,
            buffer_size,
            learning_starts,
            batch_size,
            tau,
            gamma,
            train_freq,
            gradient_steps,
            action_noise,
            replay_buffer_class=replay_buffer_class,
            replay_buffer_kwargs=replay_buffer_kwargs,
            optimize_memory_usage=optimize_memory_usage,
            policy_kwargs=policy_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            device=device,
            seed=seed,
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
            use_sde_at_warmup=use_sde_at_warmup,
            supported_action_spaces=(spaces.Box,),  # SB3's convention: an AssertionError that names the space
            sde_support=True,
            support_multi_env=True,
        )
        self.critic_learning_rate = critic_learning_rate
        self.context_learning_rate = context_learning_rate
        self.ent_coef = ent_coef
        self.ent_coef_learning_rate = ent_coef_learning_rate
        self.target_entropy = target_entropy
        self.target_update_interval = target_update_interval
        self.policy_delay = int(policy_delay)
        self.actor_updates = int(actor_updates)
        self.critic_loss_scale = critic_loss_scale
        self.history_len = history_len
        self.history_alignment = history_alignment
        self.context_warmup = context_warmup
        self.method = method
        self.reuse_rl_context = reuse_rl_context
        self.log_ent_coef: th.Tensor | None = None
        self.ent_coef_optimizer: th.optim.Adam | None = None
        # Batches the dynamics-alignment callback drew for the coming train() call (the round shares one batch).
        self._round_batches: list[HistoryReplayBufferSamples] = []
        self._warmup_pending = False
        self._warned_unsynchronised = False
        # Update rounds between two reads of the non-finite record (0: only at the end of learn()); see train()
        self.finite_check_interval = FINITE_CHECK_INTERVAL
        self._last_dump_timesteps = -1
        self._finite_guard: FiniteGuard | None = None

        if _init_setup_model:
            self._setup_model()

    # ------------------------------------------------------------------ setup
    def _setup_model(self) -> None:
        if not isinstance(self.observation_space, spaces.Box) or len(self.observation_space.shape) != 1:
            raise ValueError(
                f"DMASHSAC needs a flat Box observation space, got {self.observation_space} "
                "(flatten Dict observations with gymnasium.wrappers.FlattenObservation)"
            )
        if not isinstance(self.action_space, spaces.Box):
            raise ValueError(f"DMASHSAC needs a Box (continuous) action space, got {self.action_space}")
        if self.history_len is None:
            self.history_len = _aib_history_len(self.env) or DEFAULT_HISTORY_LEN
        self.policy_kwargs["history_len"] = self.history_len
        if self.routing.observes_context and not self.policy_kwargs.get("context_obs_dim"):
            self.policy_kwargs["context_obs_dim"] = _observed_context_dim(self.env, self.method)
        self.replay_buffer_kwargs = {"handle_timeout_termination": False, **self.replay_buffer_kwargs}
        if self.uses_history:
            if self.replay_buffer_class is None:
                self.replay_buffer_class = HistoryReplayBuffer
            if not issubclass(self.replay_buffer_class, HistoryReplayBuffer):
                raise ValueError(f"replay_buffer_class={self.replay_buffer_class!r} must be a HistoryReplayBuffer (sub)class")
            self.replay_buffer_kwargs["history_len"] = self.history_len
        elif self.replay_buffer_class is None:
            # The window-free methods need no history, but sample per context as the reference (12 of each of 20)
            self.replay_buffer_class = StratifiedReplayBuffer
        if self.batch_size < self.n_envs:
            raise ValueError(
                f"batch_size={self.batch_size} must be >= n_envs={self.n_envs}: the batch is stratified over sub-envs"
            )
        super()._setup_model()
        self._create_aliases()
        self.critic_lr_schedule = FloatSchedule(self.critic_learning_rate)
        self.context_lr_schedule = FloatSchedule(self.context_learning_rate)
        self.ent_coef_lr_schedule = FloatSchedule(self.ent_coef_learning_rate)
        update_learning_rate(self.critic.optimizer, self.critic_lr_schedule(1))
        if self.policy.context is not None:
            update_learning_rate(self.policy.context.optimizer, self.context_lr_schedule(1))

        if self.target_entropy == "auto":
            self.target_entropy = float(-np.prod(self.action_space.shape).astype(np.float32))  # type: ignore[arg-type]
        else:
            self.target_entropy = float(self.target_entropy)

        if isinstance(self.ent_coef, str) and self.ent_coef.startswith("auto"):
            init_value = 1.0
            if "_" in self.ent_coef:
                init_value = float(self.ent_coef.split("_")[1])
                if init_value <= 0.0:
                    raise ValueError(f"ent_coef={self.ent_coef!r}: the initial value must be > 0")
            self.log_ent_coef = th.log(th.ones(1, device=self.device) * init_value).requires_grad_(True)
            self.ent_coef_optimizer = th.optim.Adam([self.log_ent_coef], lr=self.ent_coef_lr_schedule(1))
        else:
            self.ent_coef_tensor = th.tensor(float(self.ent_coef), device=self.device)

    @property
    def routing(self) -> ContextRouting:
        """How the method's context reaches the networks (``method=`` and the ablation switches, resolved)."""
        policy = getattr(self, "policy", None)
        return policy.routing if policy is not None else ContextRouting.from_settings(self.policy_kwargs)

    @property
    def uses_history(self) -> bool:
        """Whether the method reads a window of past transitions (rollout window, history replay, warm-up)."""
        return self.routing.infers_context

    def _create_aliases(self) -> None:
        self.actor = self.policy.actor
        self.critic = self.policy.critic
        self.critic_target = self.policy.critic_target
        self._online_params = list(self.critic.parameters())
        self._target_params = list(self.critic_target.parameters())
        # Running statistics (BatchNorm in a features extractor) are copied, not averaged, as SB3's SAC does
        self._online_stats = get_parameters_by_name(self.critic, ["running_"])
        self._target_stats = get_parameters_by_name(self.critic_target, ["running_"])

    # ------------------------------------------------------------------ context windows
    def context_window(self, data: HistoryReplayBufferSamples, next_step: bool = False) -> th.Tensor:
        """The K-step window a replay sample's z is inferred from.

        ``"reference"`` alignment: the window ends with the sampled transition, for z_t and for the TD target alike.
        ``"causal"``: z_t reads the window ending at ``s_t`` and the TD target (``next_step=True``) the one ending at
        ``s_{t+1}``.
        """
        if self.history_alignment == "reference" or next_step:
            return data.history[:, 1:]
        return data.history[:, :-1]

    def _policy_window(self, window: np.ndarray) -> th.Tensor:
        """The rollout window as the policy sees it (observations normalised like the replay samples)."""
        if self._vec_normalize_env is not None:
            window = normalize_window(window, self._vec_normalize_env.normalize_obs, self.policy.obs_dim)  # type: ignore[arg-type]
        return th.as_tensor(window, dtype=th.float32, device=self.device)

    def rollout_window(self) -> np.ndarray | None:
        """The context window each sub-env's next action is conditioned on while collecting: its last K stored
        transitions (unnormalised), as the replay buffer keeps them.

        :return: ``(n_envs, K, 2 obs_dim + action_dim)`` float32 (a copy), or None for the window-free methods and
            before the first ``learn()``
        """
        if not self.uses_history or self.env is None or self._last_obs is None:
            return None
        obs = self._last_original_obs if self._vec_normalize_env is not None else self._last_obs
        return self.replay_buffer.rollout_windows(np.asarray(obs))

    def _setup_learn(
        self,
        total_timesteps: int,
        callback: MaybeCallback = None,
        reset_num_timesteps: bool = True,
        tb_log_name: str = "run",
        progress_bar: bool = False,
    ) -> tuple[int, BaseCallback]:
        env_reset = reset_num_timesteps or self._last_obs is None  # SB3 resets the env in these cases (set_env too)
        total_timesteps, callback = super()._setup_learn(
            total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar
        )
        assert self.env is not None
        if self.uses_history and env_reset:
            self.replay_buffer.restart_rollout_windows()
            self._warmup_pending = False
        return total_timesteps, callback

    def _init_callback(self, callback: MaybeCallback, progress_bar: bool = False) -> BaseCallback:
        """Attach the dynamics-alignment callback unless the user passed one (or a subclass) already.

        It is attached before SB3 converts and initialises the callbacks, so that every callback is initialised once.
        """
        if isinstance(callback, list):
            callback = CallbackList(callback)
        if not isinstance(callback, BaseCallback):
            callback = ConvertCallback(callback)
        has_forward_model = self.policy.context is not None and self.policy.context.has_forward_model
        if has_forward_model and not _contains(callback, DynamicsAlignmentCallback):
            callback = CallbackList([DynamicsAlignmentCallback(), callback])
        return super()._init_callback(callback, progress_bar)

    # ------------------------------------------------------------------ acting
    def _sample_action(
        self,
        learning_starts: int,
        action_noise: ActionNoise | None = None,
        n_envs: int = 1,
    ) -> tuple[np.ndarray, np.ndarray]:
        if self.num_timesteps < learning_starts and not (self.use_sde and self.use_sde_at_warmup):
            unscaled_action = np.array([self.action_space.sample() for _ in range(n_envs)])
            scaled_action = self.policy.scale_action(unscaled_action)
        else:
            if self._warmup_pending:
                self._run_context_warmup()
            assert self._last_obs is not None
            self.policy.set_training_mode(False)
            with th.no_grad():
                obs = th.as_tensor(self._last_obs, device=self.device)
                window = self._policy_window(self.rollout_window()) if self.uses_history else None
                # training-mode context inference while collecting data, as the reference (shuffle, mask, subset)
                actions = self.policy.act(obs, window, deterministic=False, training_context=True)
            scaled_action = actions.cpu().numpy().reshape((n_envs, *self.action_space.shape))  # type: ignore[misc]
        if action_noise is not None:
            scaled_action = np.clip(scaled_action + action_noise(), -1, 1)
        return self.policy.unscale_action(scaled_action), scaled_action

    def _store_transition(
        self,
        replay_buffer: ReplayBuffer,
        buffer_action: np.ndarray,
        new_obs: np.ndarray | dict[str, np.ndarray],
        reward: np.ndarray,
        dones: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        # The buffer rolls what it stores into the rollout windows (HistoryReplayBuffer.rollout_windows)
        super()._store_transition(replay_buffer, buffer_action, new_obs, reward, dones, infos)
        if not self.uses_history:
            return
        if self.context_warmup and dones.any() and self.num_timesteps >= self.learning_starts:
            if dones.all():
                self._warmup_pending = True
            elif not self._warned_unsynchronised:
                self._warned_unsynchronised = True
                warnings.warn(
                    "DMASHSAC: sub-envs ended their episodes at different steps, so the context warm-up is skipped "
                    "(it needs synchronised episode ends, which every AIB env has); pass context_warmup=False to "
                    "silence this.",
                    stacklevel=2,
                )

    def _run_context_warmup(self) -> None:
        """K deterministic, eval-mode steps in the same contexts, stored as history-only rows, then a reset.

        The steps fill the context windows so that the first action of the episode already gets an informed z;
        they are not training transitions and do not count in ``num_timesteps`` (the reference's warm-up).
        """
        self._warmup_pending = False
        env = self.env
        assert env is not None and self._last_obs is not None
        self.policy.set_training_mode(False)
        for _ in range(self.history_len):  # type: ignore[arg-type]
            with th.no_grad():
                obs = th.as_tensor(self._last_obs, device=self.device)
                scaled = self.policy.act(obs, self._policy_window(self.rollout_window()), deterministic=True).cpu().numpy()
                scaled = scaled.reshape((env.num_envs, *self.action_space.shape))  # type: ignore[misc]
            new_obs, _, dones, infos = env.step(self.policy.unscale_action(scaled))
            original_obs = self._last_original_obs if self._vec_normalize_env is not None else self._last_obs
            next_obs = self._vec_normalize_env.get_original_obs() if self._vec_normalize_env is not None else new_obs
            next_obs = np.array(next_obs, dtype=np.float32).reshape(env.num_envs, -1)
            for i, done in enumerate(dones):
                if done and infos[i].get("terminal_observation") is not None:
                    terminal = infos[i]["terminal_observation"]
                    if self._vec_normalize_env is not None:
                        terminal = self._vec_normalize_env.unnormalize_obs(terminal)
                    next_obs[i] = np.asarray(terminal, dtype=np.float32).reshape(-1)
            original_obs = np.asarray(original_obs, dtype=np.float32).reshape(env.num_envs, -1)
            self.replay_buffer.add_context_only(original_obs, next_obs, scaled, infos)
            self._last_obs = new_obs  # type: ignore[assignment]
            if self._vec_normalize_env is not None:
                self._last_original_obs = self._vec_normalize_env.get_original_obs()
        self._last_obs = env.reset()  # type: ignore[assignment]
        if self._vec_normalize_env is not None:
            self._last_original_obs = self._vec_normalize_env.get_original_obs()

    # ------------------------------------------------------------------ training
    def draw_round_batches(self, n_rounds: int) -> list[HistoryReplayBufferSamples]:
        """The batches of the next ``n_rounds`` update rounds: the dynamics update of each round
        (:class:`DynamicsAlignmentCallback`) and then ``train()`` use the same one, as the reference does.

        Each call replaces the batches still waiting (a dynamics update called by hand leaves at most its own).
        """
        self._round_batches = [
            self.replay_buffer.sample(self.batch_size, env=self.get_vec_normalize_env())  # type: ignore[union-attr]
            for _ in range(n_rounds)
        ]
        return list(self._round_batches)

    def current_context_learning_rate(self) -> float:
        """The learning rate of the encoder, hypernetwork and forward model at the current progress."""
        return float(self.context_lr_schedule(self._current_progress_remaining))

    def _update_learning_rates(self) -> None:
        progress = self._current_progress_remaining
        rates = {
            "train/learning_rate": (self.actor.optimizer, self.lr_schedule(progress)),
            "train/critic_learning_rate": (self.critic.optimizer, self.critic_lr_schedule(progress)),
        }
        if self.ent_coef_optimizer is not None:
            rates["train/ent_coef_learning_rate"] = (self.ent_coef_optimizer, self.ent_coef_lr_schedule(progress))
        for key, (optimizer, lr) in rates.items():
            update_learning_rate(optimizer, lr)
            self.logger.record(key, lr)

    def train(self, gradient_steps: int, batch_size: int = 64) -> None:
        self.policy.set_training_mode(True)
        self._update_learning_rates()
        policy = self.policy
        # The context optimiser is stepped here only when an ablation lets an RL loss reach the encoder.
        context_optimizer = policy.context.optimizer if policy.context is not None else None
        ent_coef_losses, ent_coefs, actor_losses, critic_losses = [], [], [], []
        guard = self._get_finite_guard()

        shared, self._round_batches = self._round_batches, []
        for step in range(gradient_steps):
            if step < len(shared):
                data = shared[step]  # the batch of this round's dynamics update, as the reference
            else:
                data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
            obs, next_obs = policy.flatten_obs(data.observations), policy.flatten_obs(data.next_observations)
            net_obs, net_next_obs = policy.net_obs(obs), policy.net_obs(next_obs)
            window = self.context_window(data) if self.uses_history else None
            if self.use_sde:
                self.actor.reset_noise()  # as SB3's SAC: new exploration weights for each update round
            ent_coef = th.exp(self.log_ent_coef.detach()) if self.log_ent_coef is not None else self.ent_coef_tensor

            # Critic: a fresh z (the encoder has just been updated); one context for Q(s, a) and the bootstrap.
            context = policy.rl_context(obs, window, training=True, detach=policy.critic_detach)
            with th.no_grad():
                if self.history_alignment == "causal" and self.uses_history:
                    next_context = policy.rl_context(next_obs, self.context_window(data, next_step=True), training=True)
                elif policy.routing.observes_context:
                    next_context = policy.rl_context(next_obs, None, training=True)
                else:
                    next_context = context.detach()
                next_actions, next_log_prob = self.actor.action_log_prob(net_next_obs, next_context)
                next_q_values = th.cat(self.critic_target(net_next_obs, next_actions, next_context), dim=1)
                next_q_values = th.min(next_q_values, dim=1, keepdim=True).values - ent_coef * next_log_prob
                target_q_values = data.rewards + (1 - data.dones) * self.gamma * next_q_values
            current_q_values = self.critic(net_obs, data.actions, context)
            critic_loss = self.critic_loss_scale * sum(F.mse_loss(q, target_q_values) for q in current_q_values)
            guard.observe("critic_loss", critic_loss)  # type: ignore[arg-type]
            critic_losses.append(critic_loss.item())  # type: ignore[union-attr]
            self._optimize(critic_loss, self.critic.optimizer, context_optimizer if not policy.critic_detach else None)

            # Actor and entropy coefficient: actor_updates times on every policy_delay-th round, fresh z each time.
            if self._n_updates % self.policy_delay == 0:
                for update in range(self.actor_updates):
                    if self.use_sde and update > 0:  # the weights' graph (through log_std) went with the last backward
                        self.actor.reset_noise()
                    if self.reuse_rl_context and policy.actor_detach:
                        context = context.detach()
                    else:
                        context = policy.rl_context(obs, window, training=True, detach=policy.actor_detach)
                    self.critic.requires_grad_(False)  # no critic weight gradients in the actor loss
                    actions_pi, log_prob = self.actor.action_log_prob(net_obs, context)
                    min_qf_pi = th.min(th.cat(self.critic(net_obs, actions_pi, context), dim=1), dim=1, keepdim=True).values
                    self.critic.requires_grad_(True)
                    actor_loss = (ent_coef * log_prob - min_qf_pi).mean()
                    guard.observe("actor_loss", actor_loss)
                    actor_losses.append(actor_loss.item())
                    self._optimize(actor_loss, self.actor.optimizer, context_optimizer if not policy.actor_detach else None)

                    if self.ent_coef_optimizer is not None and self.log_ent_coef is not None:
                        with th.no_grad():  # a fresh log-probability after the actor step, as the reference
                            _, log_prob = self.actor.action_log_prob(net_obs, context.detach())
                        ent_coef_loss = -(self.log_ent_coef.exp() * (log_prob + self.target_entropy)).mean()
                        guard.observe("ent_coef_loss", ent_coef_loss)
                        ent_coef_losses.append(ent_coef_loss.item())
                        self._optimize(ent_coef_loss, self.ent_coef_optimizer)
                        ent_coef = th.exp(self.log_ent_coef.detach())
            ent_coefs.append(ent_coef.item())

            if self._n_updates % self.target_update_interval == 0:
                self._update_targets()
            self._n_updates += 1
            if guard.end_round():
                self.check_finite()

        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/ent_coef", np.mean(ent_coefs))
        self.logger.record("train/critic_loss", np.mean(critic_losses))
        if actor_losses:
            self.logger.record("train/actor_loss", np.mean(actor_losses))
        if ent_coef_losses:
            self.logger.record("train/ent_coef_loss", np.mean(ent_coef_losses))

    @th.no_grad()
    def _update_targets(self) -> None:
        """Target critics <- (1 - tau) target + tau online (one kernel per tensor list); running statistics copied."""
        th._foreach_lerp_(self._target_params, self._online_params, self.tau)
        for target_stat, online_stat in zip(self._target_stats, self._online_stats, strict=True):
            target_stat.copy_(online_stat)

    def dump_logs(self) -> None:
        """Write the logger's table, at most once per vector step.

        SB3 dumps after every ``log_interval``-th finished episode; sub-envs that end their episodes together (every AIB
        env) would print up to ``n_envs / log_interval`` identical tables per vector step.
        """
        if self._last_dump_timesteps == self.num_timesteps:
            return
        self._last_dump_timesteps = self.num_timesteps
        super().dump_logs()

    def _get_finite_guard(self) -> FiniteGuard:
        # Built lazily: after a load it starts counting at the loaded model's update rounds
        if self._finite_guard is None:
            self._finite_guard = FiniteGuard(
                type(self).__name__,
                ("critic_loss", "actor_loss", "ent_coef_loss"),
                check_every=self.finite_check_interval,
                first_round=self._n_updates,
            )
        self._finite_guard.check_every = self.finite_check_interval
        return self._finite_guard

    def check_finite(self) -> None:
        """Raise :class:`~sb3_dmash.common.divergence.DivergenceError` if a loss of an earlier update round was not finite
        or a parameter is not finite now.

        ``train()`` calls it every ``finite_check_interval`` update rounds (100; 0 only at the end of ``learn()``) and
        ``learn()`` once at its end: the record is kept on the device, so the rounds in between need no host
        synchronisation for it.
        """
        parameters = list(self.policy.named_parameters())
        if self.log_ent_coef is not None:
            parameters.append(("log_ent_coef", self.log_ent_coef))
        self._get_finite_guard().check(parameters)

    @staticmethod
    def _optimize(loss: th.Tensor, optimizer: th.optim.Optimizer, context_optimizer: th.optim.Optimizer | None = None) -> None:
        """One gradient step; with ``context_optimizer`` the loss also trains the encoder (a detach ablation).

        Gradients are set to None, never zero-filled, so Adam never moves a parameter the loss did not reach.
        """
        optimizer.zero_grad(set_to_none=True)
        if context_optimizer is not None:
            context_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if context_optimizer is not None:
            context_optimizer.step()
            context_optimizer.zero_grad(set_to_none=True)

    def learn(
        self: SelfDMASHSAC,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str = "DMASHSAC",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfDMASHSAC:
        super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )
        self.check_finite()  # the rounds since the last periodic check
        if log_interval is not None:
            self._flush_logs()
        return self

    def _flush_logs(self) -> None:
        """Write the values recorded since the last table (a short run may have finished no episode, which left its
        TensorBoard file without scalars), and keep them readable in ``logger.name_to_value`` as SB3 leaves them."""
        logger = self.logger
        if not logger.name_to_value or self._last_dump_timesteps == self.num_timesteps:
            return
        kept = dict(logger.name_to_value), dict(logger.name_to_count), dict(logger.name_to_excluded)
        self.dump_logs()
        logger.name_to_value.update(kept[0])
        logger.name_to_count.update(kept[1])
        logger.name_to_excluded.update(kept[2])

    # ------------------------------------------------------------------ saving
    @classmethod
    def load(
        cls: type[SelfDMASHSAC],
        path: str | pathlib.Path | io.BufferedIOBase,
        env: GymEnv | None = None,
        device: th.device | str = "auto",
        custom_objects: dict[str, Any] | None = None,
        print_system_info: bool = False,
        force_reset: bool = True,
        **kwargs: Any,
    ) -> SelfDMASHSAC:
        """SB3's ``load`` (same arguments), after a look into the zip.

        A truncated or corrupt file, or a model saved by another algorithm (SB3's ``SAC``...), raises a ``ValueError``
        that says so, instead of SB3's ``AssertionError: No data found`` or an unrelated replay-buffer error.
        """
        check_saved_model(path, DMASHPolicy, cls.__name__, custom_objects)
        return super().load(
            path,
            env=env,
            device=device,
            custom_objects=custom_objects,
            print_system_info=print_system_info,
            force_reset=force_reset,
            **kwargs,
        )

    def _excluded_save_params(self) -> list[str]:
        return [
            *super()._excluded_save_params(),
            "actor",
            "critic",
            "critic_target",
            "_online_params",
            "_target_params",
            "_online_stats",
            "_target_stats",
            "_round_batches",
            "_finite_guard",
            "_last_dump_timesteps",
        ]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts = ["policy", "actor.optimizer", "critic.optimizer"]
        if self.policy.context is not None:
            state_dicts.append("policy.context.optimizer")
        if self.ent_coef_optimizer is not None:
            saved_pytorch_variables = ["log_ent_coef"]
            state_dicts.append("ent_coef_optimizer")
        else:
            saved_pytorch_variables = ["ent_coef_tensor"]
        return state_dicts, saved_pytorch_variables


def _observed_context_dim(env: VecEnv | None, method: str) -> int:
    """Number of true context values an AIB env made with ``context_aware=True`` appends to its observation."""
    aware = False
    if env is not None:
        try:
            aware = bool(env.get_attr("context_aware", indices=[0])[0])
            keys = env.get_attr("context_keys", indices=[0])[0]
        except Exception:  # not an AIB env: no such attributes
            aware = False
    if not aware:
        raise ValueError(
            f"method={method!r} reads the true context from the observation, but the env does not append it: make the "
            "env with context_aware=True, e.g. aib.make_vec_env(env_id, split, env_kwargs={'context_aware': True}) or "
            "gym.make(env_id, context_aware=True); for other envs pass policy_kwargs={'context_obs_dim': n} for n "
            "trailing context entries"
        )
    return len(keys)


def _contains(callback: BaseCallback, cls: type[BaseCallback]) -> bool:
    if isinstance(callback, cls):
        return True
    if isinstance(callback, CallbackList):
        return any(_contains(c, cls) for c in callback.callbacks)
    return False
