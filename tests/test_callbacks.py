"""SB3's callbacks with DMASHSAC, and the dynamics-alignment callback that ``learn()`` attaches by itself.

The dynamics loss runs in :class:`~sb3_dmash.common.callbacks.DynamicsAlignmentCallback`: exactly one instance per
``learn()`` call (the automatic one, or the user's own instance or subclass instead of it), doing one dynamics update
per RL update round. Its count is read from the context optimiser's Adam ``step``.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from stable_baselines3.common.callbacks import (
    BaseCallback,
    CallbackList,
    CheckpointCallback,
    EvalCallback,
    EveryNTimesteps,
    StopTrainingOnMaxEpisodes,
    StopTrainingOnNoModelImprovement,
    StopTrainingOnRewardThreshold,
)

import aib
from sb3_dmash import DMASHSAC
from sb3_dmash.common.buffers import HistoryReplayBuffer
from sb3_dmash.common.callbacks import DynamicsAlignmentCallback

POLICY_KWARGS = dict(net_arch=[16], hypernet_arch=[8], encoder_dim=8)


def make_env(n_envs: int = 2, split: str = "train", seed: int = 0):
    return aib.make_vec_env("AIB-DI-v0", split, n_envs=n_envs, seed=seed)


def make_model(n_envs: int = 2, **kwargs) -> DMASHSAC:
    kwargs = {"learning_starts": 100, "batch_size": 16, "buffer_size": 2000, "seed": 0, **kwargs}
    return DMASHSAC("MlpPolicy", make_env(n_envs), policy_kwargs=POLICY_KWARGS, **kwargs)


def dynamics_steps(model: DMASHSAC) -> int:
    """Number of dynamics updates so far (Adam's step count of the context optimiser, the same for every parameter)."""
    steps = {int(s["step"]) for s in model.policy.context.optimizer.state.values()}
    assert len(steps) <= 1, steps
    return steps.pop() if steps else 0


class CountingDynamicsCallback(DynamicsAlignmentCallback):
    """A user subclass: counts its update rounds (and could plug in another objective)."""

    def __init__(self) -> None:
        super().__init__()
        self.n_updates = 0

    def update(self, gradient_steps: int) -> None:
        self.n_updates += gradient_steps
        super().update(gradient_steps)


class NoDynamicsCallback(DynamicsAlignmentCallback):
    """A replacement that trains nothing: proves that no automatic callback runs next to it."""

    def update(self, gradient_steps: int) -> None:
        pass


def test_callbacks(tmp_path):
    """SB3's ``test_callbacks`` with DMASHSAC (eval on the eval_in contexts, checkpoints with the replay buffer)."""
    log_folder = tmp_path / "logs" / "callbacks"
    model = make_model(learning_starts=100)
    checkpoint_callback = CheckpointCallback(save_freq=30, save_path=log_folder, save_replay_buffer=True)
    # Stop training if the performance is good enough (never, here), or without improvement after 2 evaluations
    callback_on_best = StopTrainingOnRewardThreshold(reward_threshold=1e9, verbose=1)
    callback_no_model_improvement = StopTrainingOnNoModelImprovement(max_no_improvement_evals=2, min_evals=1, verbose=1)
    eval_callback = EvalCallback(
        make_env(1, split="eval_in", seed=1),
        callback_on_new_best=callback_on_best,
        callback_after_eval=callback_no_model_improvement,
        best_model_save_path=log_folder,
        log_path=log_folder,
        eval_freq=50,
        n_eval_episodes=1,
        warn=False,
    )
    # Equivalent to the checkpoint callback, event-driven
    checkpoint_on_event = CheckpointCallback(save_freq=1, save_path=log_folder, name_prefix="event")
    event_callback = EveryNTimesteps(n_steps=100, callback=checkpoint_on_event)
    callback_max_episodes = StopTrainingOnMaxEpisodes(max_episodes=100, verbose=1)
    callback = CallbackList([checkpoint_callback, eval_callback, event_callback, callback_max_episodes])
    model.learn(120, callback=callback)
    assert model.num_timesteps == 120

    # Access to local variables
    assert model.env.observation_space.contains(callback.locals["new_obs"][0])
    assert isinstance(callback.locals["dones"], np.ndarray)
    # The child callbacks were called
    assert checkpoint_callback.locals["new_obs"] is callback.locals["new_obs"]
    assert event_callback.locals["new_obs"] is callback.locals["new_obs"]
    assert checkpoint_on_event.locals["new_obs"] is callback.locals["new_obs"]
    # Internal counters match the model's (n_calls counts vector steps)
    assert event_callback.num_timesteps == model.num_timesteps
    assert event_callback.n_calls == model.num_timesteps // 2

    # Checkpoints every 30 calls (60 transitions) with the replay buffer, which loads back
    files = set(os.listdir(log_folder))
    assert {"rl_model_60_steps.zip", "rl_model_120_steps.zip", "rl_model_replay_buffer_120_steps.pkl"} <= files
    assert {"event_100_steps.zip", "best_model.zip", "evaluations.npz"} <= files
    loaded = DMASHSAC.load(log_folder / "rl_model_120_steps.zip", env=make_env(2))
    loaded.load_replay_buffer(log_folder / "rl_model_replay_buffer_120_steps.pkl")
    # SB3 calls on_step() before storing the step's transition, so the checkpoint holds 59 of the 60 vector steps
    assert isinstance(loaded.replay_buffer, HistoryReplayBuffer) and loaded.replay_buffer.pos == 59
    loaded.learn(10, reset_num_timesteps=False)
    evaluations = np.load(log_folder / "evaluations.npz")
    # eval_freq counts calls (vector steps): one evaluation after 50 calls
    assert evaluations["timesteps"].tolist() == [100] and evaluations["results"].shape == (1, 1)

    # callback=None, a list and a plain function are converted
    model.learn(20, callback=None, reset_num_timesteps=False)
    model.learn(20, callback=[checkpoint_callback, eval_callback], reset_num_timesteps=False)
    model.learn(20, callback=lambda _locals, _globals: True, reset_num_timesteps=False)
    assert model.num_timesteps == 180
    assert dynamics_steps(model) == model._n_updates == 40


def test_stop_training_on_reward_threshold():
    model = make_model(learning_starts=100)
    callback_on_best = StopTrainingOnRewardThreshold(reward_threshold=-1e9, verbose=1)
    eval_callback = EvalCallback(
        make_env(1, split="eval_in", seed=1), callback_on_new_best=callback_on_best, eval_freq=55, n_eval_episodes=1
    )
    model.learn(1000, callback=eval_callback)
    # The first evaluation (after 55 vector steps) reaches the threshold and stops training
    assert model.num_timesteps == 110
    assert model._n_updates == 4  # vector steps 51..54; the stopping step does no update
    assert dynamics_steps(model) == 4


def test_dynamics_callback_attached_once():
    model = make_model(learning_starts=100)
    attached: list[BaseCallback] = []
    original_init = DynamicsAlignmentCallback.init_callback

    def spy(self, model_):
        attached.append(self)
        return original_init(self, model_)

    DynamicsAlignmentCallback.init_callback = spy
    try:
        model.learn(120)
    finally:
        DynamicsAlignmentCallback.init_callback = original_init
    assert len({id(c) for c in attached}) == 1
    assert model._n_updates == 10
    assert dynamics_steps(model) == 10
    assert "train/dynamics_loss" in model.logger.name_to_value


class InitCounter(BaseCallback):
    def __init__(self) -> None:
        super().__init__()
        self.n_init = 0

    def _init_callback(self) -> None:
        self.n_init += 1

    def _on_step(self) -> bool:
        return True


@pytest.mark.parametrize("progress_bar", [False, True])
def test_user_callbacks_initialised_once(progress_bar, tmp_path):
    """Attaching the dynamics callback must not initialise the user's callbacks a second time (as SB3: once)."""
    model = make_model(learning_starts=1000)
    single, in_list = InitCounter(), InitCounter()
    model.learn(4, callback=single, progress_bar=progress_bar)
    model.learn(4, callback=[in_list, CheckpointCallback(save_freq=10_000, save_path=str(tmp_path))])
    assert single.n_init == 1 and in_list.n_init == 1


@pytest.mark.parametrize("as_list", [False, True])
def test_user_dynamics_callback_replaces_automatic(as_list, tmp_path):
    model = make_model(learning_starts=100)
    user_callback = CountingDynamicsCallback()
    other = CheckpointCallback(save_freq=10_000, save_path=str(tmp_path))
    model.learn(120, callback=[other, user_callback] if as_list else user_callback)
    assert user_callback.n_calls == 60
    assert user_callback.n_updates == model._n_updates == 10
    # exactly once per round, never twice
    assert dynamics_steps(model) == 10


def test_user_dynamics_callback_can_disable_the_loss():
    model = make_model(learning_starts=100)
    model.learn(110, callback=NoDynamicsCallback())
    assert model._n_updates == 5
    assert dynamics_steps(model) == 0  # no automatic callback ran next to the user's
    assert "train/dynamics_loss" not in model.logger.name_to_value


@pytest.mark.parametrize(
    "train_freq, gradient_steps, n_rounds",
    [
        (1, 1, 10),  # one round per vector step after learning_starts
        (2, 1, 5),  # one round every 2 vector steps
        (2, -1, 20),  # -1: one round per collected transition (2 steps x 2 envs per rollout)
        ((2, "step"), 2, 10),
    ],
)
def test_dynamics_updates_equal_rl_rounds(train_freq, gradient_steps, n_rounds):
    model = make_model(learning_starts=100, train_freq=train_freq, gradient_steps=gradient_steps)
    model.learn(120)
    assert model._n_updates == n_rounds
    assert dynamics_steps(model) == n_rounds


def test_gradient_steps_zero():
    model = make_model(learning_starts=100, gradient_steps=0)
    model.learn(110)
    assert model._n_updates == 0 and dynamics_steps(model) == 0
