"""Save / load of DMASHSAC and of its policy (SB3's ``test_save_load.py`` cases for SAC).

Besides SB3's cases: the context module and its optimiser are saved, the stateful predictions agree after loading,
the rollout window follows a different number of envs, and a standalone ``policy.save()`` keeps every non-default
constructor argument.
"""

from __future__ import annotations

import copy
import io
import pathlib
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.save_util import load_from_zip_file
from stable_baselines3.common.utils import get_device
from stable_baselines3.common.vec_env import DummyVecEnv

import aib
from sb3_dmash import DMASHSAC, DMASHPolicy, HistoryReplayBuffer, MlpPolicy
from sb3_dmash.common.windows import initial_window

POLICY_KWARGS = dict(net_arch=[16], hypernet_arch=[8], encoder_dim=8)
TORCH_STATE = {"policy", "actor.optimizer", "critic.optimizer", "policy.context.optimizer", "ent_coef_optimizer"}


def make_env(n_envs: int = 2, split: str = "train", seed: int = 0):
    return aib.make_vec_env("AIB-DI-v0", split, n_envs=n_envs, seed=seed)


def make_model(env, **kwargs) -> DMASHSAC:
    kwargs = {"learning_starts": 100, "batch_size": 16, "buffer_size": 2000, "seed": 0, **kwargs}
    policy_kwargs = {**POLICY_KWARGS, **kwargs.pop("policy_kwargs", {})}
    return DMASHSAC("MlpPolicy", env, policy_kwargs=policy_kwargs, **kwargs)


def assert_same(a: Any, b: Any, path: str = "") -> None:
    """Recursive equality of (nested) state dicts: tensors, arrays, numbers, lists and dicts."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{path}: keys {set(a) ^ set(b)}"
        for key in a:
            assert_same(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, th.Tensor):
        assert isinstance(b, th.Tensor) and a.shape == b.shape, path
        assert th.equal(a.cpu(), b.cpu()), path
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def observation_sequence(model: DMASHSAC, n_steps: int = 30) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Observations and episode starts of a stateful deterministic rollout of ``model`` on evaluation contexts."""
    env = make_env(2, split="eval_in", seed=5)
    obs, state, starts = env.reset(), None, np.ones(2, dtype=bool)
    observations, episode_starts = [], []
    for _ in range(n_steps):
        observations.append(obs)
        episode_starts.append(starts)
        action, state = model.predict(obs, state=state, episode_start=starts, deterministic=True)
        obs, _, starts, _ = env.step(action)
    return observations, episode_starts


def stateful_actions(model: DMASHSAC, observations, episode_starts) -> np.ndarray:
    state, actions = None, []
    for obs, starts in zip(observations, episode_starts, strict=True):
        action, state = model.predict(obs, state=state, episode_start=starts, deterministic=True)
        actions.append(action)
    return np.array(actions)


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[DMASHSAC, str]:
    """A model trained for 20 update rounds (2 envs, 140 transitions), saved once for the whole module."""
    model = make_model(make_env(2))
    model.learn(140)
    assert model._n_updates == 20
    path = str(tmp_path_factory.mktemp("save_load") / "dmash_sac.zip")
    model.save(path)
    return model, path


@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_save_load(saved, device):
    model, path = saved
    params = model.get_parameters()
    assert set(params) == TORCH_STATE
    assert any(key.startswith("context.encoder.") for key in params["policy"])
    assert any(key.startswith("context.hypernet.") for key in params["policy"])
    assert any(key.startswith("context.fm_") for key in params["policy"])
    # every optimiser has been stepped, so the comparison below includes Adam's moments
    for name in TORCH_STATE - {"policy"}:
        assert len(params[name]["state"]) > 0, name

    loaded = DMASHSAC.load(path, device=device)
    assert loaded.policy.device == get_device(device)
    assert_same(params, loaded.get_parameters())
    assert th.equal(model.log_ent_coef.detach().cpu(), loaded.log_ent_coef.detach().cpu())
    assert loaded.num_timesteps == model.num_timesteps == 140
    assert loaded._n_updates == model._n_updates

    # Deterministic stateful predictions agree (same observations, the state carried; 1e-4 as SB3, for CUDA)
    observations, starts = observation_sequence(model)
    np.testing.assert_allclose(
        stateful_actions(model, observations, starts), stateful_actions(loaded, observations, starts), atol=1e-4
    )
    # ... and differ from those of an untrained model (the comparison is not trivially true)
    fresh = make_model(make_env(2), seed=1)
    assert not np.allclose(stateful_actions(fresh, observations, starts), stateful_actions(loaded, observations, starts))


def test_save_load_paths_and_streams(saved, tmp_path):
    """SB3's ``test_open_file_str_pathlib``: str and pathlib paths (suffix added) and byte streams."""
    model, _ = saved
    params = model.get_parameters()
    model.save(str(tmp_path / "as_str"))
    model.save(pathlib.Path(tmp_path / "as_path"))
    byte_io = io.BytesIO()
    model.save(byte_io)
    byte_io.seek(0)
    for source in (str(tmp_path / "as_str.zip"), tmp_path / "as_path.zip", byte_io):
        assert_same(params, DMASHSAC.load(source).get_parameters())


def test_set_parameters_errors(saved):
    _, path = saved
    model = DMASHSAC.load(path)
    original_params = copy.deepcopy(model.get_parameters())

    invalid_object_params = copy.deepcopy(original_params)
    invalid_object_params["I_should_not_be_a_valid_object"] = "and_I_am_an_invalid_tensor"
    with pytest.raises(ValueError, match="I_should_not_be_a_valid_object"):
        model.set_parameters(invalid_object_params, exact_match=True)
    with pytest.raises(ValueError, match="I_should_not_be_a_valid_object"):
        model.set_parameters(invalid_object_params, exact_match=False)

    # exact_match catches a missing object (here the context optimiser)
    missing_object_params = {k: v for k, v in original_params.items() if k != "policy.context.optimizer"}
    with pytest.raises(ValueError, match=r"policy\.context\.optimizer"):
        model.set_parameters(missing_object_params, exact_match=True)
    model.set_parameters(missing_object_params, exact_match=False)

    # exact_match catches a missing tensor inside a state dict (PyTorch's strict load_state_dict)
    missing_tensor_params = copy.deepcopy(original_params)
    missing_tensor_params["policy"].pop(next(k for k in original_params["policy"] if k.startswith("context.")))
    with pytest.raises(RuntimeError):
        model.set_parameters(missing_tensor_params, exact_match=True)

    # Parameters do change, the context module's included
    random_params = {
        name: params if "optimizer" in name else {k: th.rand_like(v) for k, v in params.items()}
        for name, params in original_params.items()
    }
    model.set_parameters(random_params, exact_match=True)
    new_params = model.get_parameters()
    for key, value in original_params["policy"].items():
        assert not th.allclose(value, new_params["policy"][key]), key
    model.set_parameters(original_params, exact_match=True)
    assert_same(original_params, model.get_parameters())


def test_learn_after_load(saved):
    model, path = saved
    loaded = DMASHSAC.load(path, env=make_env(2))
    assert loaded.rollout_window() is None  # the env restarts: learn() starts the windows afresh
    loaded.learn(20, reset_num_timesteps=False)
    assert loaded.num_timesteps == 160
    assert loaded._n_updates == 30
    context_steps = {int(s["step"]) for s in loaded.policy.context.optimizer.state.values()}
    assert context_steps == {30}  # 20 before saving + 10 after loading
    assert loaded.rollout_window().shape == (2, 24, 10)
    assert not th.equal(model.log_ent_coef.detach().cpu(), loaded.log_ent_coef.detach().cpu())  # still optimised
    # reset_num_timesteps=True starts counting again
    loaded.learn(20)
    assert loaded.num_timesteps == 20


def test_load_with_different_n_envs(saved):
    _, path = saved
    loaded = DMASHSAC.load(path, env=make_env(3))
    assert loaded.n_envs == 3 and loaded.replay_buffer.n_envs == 3
    loaded.learn(120)
    assert loaded.rollout_window().shape == (3, 24, 10)
    assert loaded._n_updates == 20 + 7  # vector steps 34..40 have num_timesteps > learning_starts
    context_steps = {int(s["step"]) for s in loaded.policy.context.optimizer.state.values()}
    assert context_steps == {27}
    # The stateful predict works with any number of envs
    action, state = loaded.predict(np.zeros((5, 4), dtype=np.float32))
    assert action.shape == (5, 2) and state.window.shape == (5, 24, 10)


def test_set_env():
    """SB3's ``test_set_env`` for DMASHSAC, plus the rollout window's behaviour."""
    env = make_env(1)
    env2 = make_env(1, seed=1)
    env3 = gym.make("AIB-DI-v0")
    env4 = make_env(2)
    model = make_model(env)
    model.learn(64)

    model.set_env(env2, force_reset=True)
    assert model._last_obs is None
    model.learn(64, reset_num_timesteps=True)
    assert model._last_obs is not None

    # a plain gymnasium env is wrapped
    model.set_env(env3)
    model.learn(64)
    assert model.history_len == 24

    # SB3: set_env needs the same number of envs (load() is the way to change it, see test_load_with_different_n_envs)
    with pytest.raises(AssertionError, match="number of environments"):
        model.set_env(env4)

    # Keep the same env without reset: the rollout window carries over with reset_num_timesteps=False
    model.set_env(model.get_env(), force_reset=False)
    assert model._last_obs is not None
    window = model.rollout_window()
    buffer = model.replay_buffer
    np.testing.assert_array_equal(window[:, -1, :4], buffer.observations[(buffer.pos - 1) % buffer.buffer_size])
    first = _FirstRolloutWindow()
    model.learn(64, reset_num_timesteps=False, callback=first)
    np.testing.assert_array_equal(first.window, window)
    assert model.num_timesteps == 128

    # A new run (reset_num_timesteps=True) starts from a fresh window
    model.set_env(model.get_env(), force_reset=True)
    assert model._last_obs is None
    first = _FirstRolloutWindow()
    model.learn(64, callback=first)
    np.testing.assert_array_equal(first.window, initial_window(first.obs, 24, 2))


class _FirstRolloutWindow(BaseCallback):
    """Records the rollout window (and observation) the first action of a ``learn()`` call is conditioned on."""

    def _on_training_start(self) -> None:
        self.window, self.obs = self.model.rollout_window(), np.array(self.model._last_obs)

    def _on_step(self) -> bool:
        return True


def test_exclude_include_saved_params(tmp_path):
    model = make_model("Pendulum-v1", verbose=1)
    model.save(tmp_path / "test_save", exclude=["verbose"])
    del model
    model = DMASHSAC.load(str(tmp_path / "test_save.zip"))
    assert model.verbose != 1
    model.verbose = 2
    model.save(tmp_path / "test_save", exclude=["verbose"], include=["verbose"])
    del model
    model = DMASHSAC.load(str(tmp_path / "test_save.zip"))
    assert model.verbose == 2
    # the aliases are never saved
    data, _, _ = load_from_zip_file(str(tmp_path / "test_save.zip"))
    assert not {"actor", "critic", "critic_target", "replay_buffer", "policy"} & set(data)


def test_load_custom_objects(saved):
    _, path = saved
    loaded = DMASHSAC.load(
        path,
        env=make_env(2),
        custom_objects={"learning_rate": 1e-4, "critic_learning_rate": 5e-4, "not_a_saved_attribute": 1},
    )
    assert loaded.learning_rate == 1e-4 and loaded.lr_schedule(1.0) == pytest.approx(1e-4)
    assert loaded.critic_learning_rate == 5e-4 and loaded.critic_lr_schedule(1.0) == pytest.approx(5e-4)
    # custom objects replace only attributes present in the file
    assert not hasattr(loaded, "not_a_saved_attribute")
    loaded.learn(10, reset_num_timesteps=False)
    assert loaded.actor.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)
    assert loaded.critic.optimizer.param_groups[0]["lr"] == pytest.approx(5e-4)


def test_save_load_pytorch_var(saved, tmp_path):
    model, path = saved
    # Learned entropy coefficient: saved as a PyTorch variable, restored, and still optimised after loading
    _, _, pytorch_variables = load_from_zip_file(path)
    assert set(pytorch_variables) == {"log_ent_coef"}
    loaded = DMASHSAC.load(path, env=make_env(2))
    before = model.log_ent_coef.detach().cpu().clone()
    assert th.equal(before, loaded.log_ent_coef.detach().cpu())
    assert loaded.ent_coef_optimizer.param_groups[0]["params"][0] is loaded.log_ent_coef
    loaded.learn(20, reset_num_timesteps=False)
    assert not th.allclose(before, loaded.log_ent_coef.detach().cpu())

    # A fixed entropy coefficient: saved as ent_coef_tensor, no optimiser
    model = make_model(make_env(2), ent_coef=0.1)
    model.learn(110)
    fixed_path = str(tmp_path / "fixed_ent_coef.zip")
    model.save(fixed_path)
    _, params, pytorch_variables = load_from_zip_file(fixed_path)
    assert set(pytorch_variables) == {"ent_coef_tensor"}
    assert "ent_coef_optimizer" not in params
    loaded = DMASHSAC.load(fixed_path, env=make_env(2))
    assert loaded.log_ent_coef is None and loaded.ent_coef_optimizer is None
    assert th.equal(model.ent_coef_tensor.cpu(), loaded.ent_coef_tensor.cpu())
    loaded.learn(20, reset_num_timesteps=False)
    assert float(loaded.ent_coef_tensor) == pytest.approx(0.1)


def test_save_load_replay_buffer(saved, tmp_path):
    model, path = saved
    old_buffer = copy.deepcopy(model.replay_buffer)
    buffer_path = tmp_path / "logs" / "replay_buffer.pkl"
    buffer_path.parent.mkdir(parents=True)
    model.save_replay_buffer(buffer_path)

    loaded = DMASHSAC.load(path, env=make_env(2))
    loaded.load_replay_buffer(buffer_path)
    buffer = loaded.replay_buffer
    assert isinstance(buffer, HistoryReplayBuffer)
    for name in ("observations", "next_observations", "actions", "rewards", "dones", "timeouts", "ep_steps", "sampleable"):
        np.testing.assert_array_equal(getattr(old_buffer, name), getattr(buffer, name), err_msg=name)
    for name in ("pos", "full", "buffer_size", "n_envs", "history_len", "history_across_episodes", "stratified"):
        assert getattr(old_buffer, name) == getattr(buffer, name), name
    np.testing.assert_array_equal(old_buffer._cur_ep_step, buffer._cur_ep_step)
    assert old_buffer._last_context_id == buffer._last_context_id

    # Learn after loading the buffer (update rounds sample from it right away)
    loaded.learn(20, reset_num_timesteps=False)
    assert buffer.pos == old_buffer.pos + 10
    assert loaded._n_updates == 30

    # SB3's extend(): one add() per row
    n_rows = 5
    infos = [[{} for _ in range(2)] for _ in range(n_rows)]
    buffer.extend(
        old_buffer.observations[:n_rows],
        old_buffer.next_observations[:n_rows],
        old_buffer.actions[:n_rows],
        old_buffer.rewards[:n_rows],
        old_buffer.dones[:n_rows],
        infos,
    )
    assert buffer.pos == old_buffer.pos + 10 + n_rows
    assert buffer.sample(16).history.shape == (16, 25, 10)


def test_policy_save_load(tmp_path):
    """A standalone ``policy.save()`` / ``DMASHPolicy.load()`` keeps every non-default constructor argument."""
    policy_kwargs = dict(
        net_arch=dict(pi=[16], qf=[12, 16]),
        hypernet_arch=[8],
        encoder_dim=8,
        context_dim=4,
        input_norm="layer",
        output_norm="none",
        history_on_episode_start="keep",
        input_mask_prob=0.2,
        subset_fraction=0.5,
        input_shuffle=False,
        adapter_bottleneck=4,
        n_critics=3,
        log_std_bounds=(-4.0, 1.0),
        activation_fn=th.nn.Tanh,
        optimizer_kwargs=dict(eps=1e-5),
    )
    model = DMASHSAC("MlpPolicy", "Pendulum-v1", history_len=6, policy_kwargs=policy_kwargs, seed=0)
    policy = model.policy
    path = tmp_path / "policy.pkl"
    policy.save(path)

    for cls in (DMASHPolicy, MlpPolicy):
        loaded = cls.load(path)
        expected = policy._get_constructor_parameters()
        actual = loaded._get_constructor_parameters()
        for params in (expected, actual):
            params.pop("lr_schedule", None)
        assert actual.keys() == expected.keys()
        for key in ("observation_space", "action_space"):
            assert actual.pop(key) == expected.pop(key)
        assert actual == expected
        assert actual["history_len"] == 6 and actual["context_dim"] == 4 and actual["history_on_episode_start"] == "keep"
        assert loaded.context.encoder.context_dim == 4
        assert isinstance(loaded.context.encoder.input_norm, th.nn.LayerNorm)
        assert isinstance(loaded.context.encoder.output_norm, th.nn.Identity)
        assert loaded.critic.n_critics == 3 and loaded.context.hypernet.bottleneck_dim == 4
        assert_same(policy.state_dict(), loaded.state_dict())

        # Stateful predictions agree, episode starts ("keep") included
        env = gym.make("Pendulum-v1")
        obs, _ = env.reset(seed=0)
        state_a = state_b = None
        for step in range(12):
            start = np.array([step in (0, 7)])
            action_a, state_a = policy.predict(obs, state=state_a, episode_start=start, deterministic=True)
            action_b, state_b = loaded.predict(obs, state=state_b, episode_start=start, deterministic=True)
            np.testing.assert_allclose(action_a, action_b)
            obs, *_ = env.step(action_a)


def test_loaded_model_keeps_settings(tmp_path):
    kwargs = dict(
        history_len=7,
        history_alignment="causal",
        context_warmup=False,
        policy_delay=1,
        actor_updates=1,
        critic_loss_scale=0.5,
        critic_learning_rate=5e-4,
        context_learning_rate=2e-4,
        ent_coef="auto_0.5",
        ent_coef_learning_rate=2e-3,
        target_entropy=-1.5,
        target_update_interval=2,
        replay_buffer_kwargs=dict(history_across_episodes=False, stratified=False, handle_timeout_termination=True),
    )
    model = make_model(make_env(2), **kwargs)
    path = tmp_path / "settings.zip"
    model.save(path)
    loaded = DMASHSAC.load(path, env=make_env(2))
    for name in kwargs:
        if name != "replay_buffer_kwargs":
            assert getattr(loaded, name) == getattr(model, name), name
    assert loaded.replay_buffer_kwargs == model.replay_buffer_kwargs
    assert loaded.replay_buffer_kwargs["history_len"] == 7
    buffer = loaded.replay_buffer
    assert buffer.history_len == 7 and not buffer.history_across_episodes and not buffer.stratified
    assert buffer.handle_timeout_termination
    assert loaded.policy.history_len == 7
    assert float(loaded.log_ent_coef.detach().exp()) == pytest.approx(0.5)
    assert loaded.critic_lr_schedule(1.0) == pytest.approx(5e-4)
    assert loaded.context_lr_schedule(1.0) == pytest.approx(2e-4)
    loaded.learn(110)
    assert loaded._n_updates == 5 and loaded.rollout_window().shape == (2, 7, 10)
    # A non-AIB env keeps the saved K as well
    model = make_model(DummyVecEnv([lambda: gym.make("Pendulum-v1")]), history_len=3)
    model.save(path)
    assert DMASHSAC.load(path).history_len == 3


@pytest.mark.parametrize("method", ["dmash", "dr"])
@pytest.mark.parametrize("use_sde", [False, True])
def test_actor_and_critic_save_load(tmp_path, method, use_sde):
    """SB3's test_save_load_policy / test_save_load_q_net for the networks: a saved actor or critic loads with the
    same architecture and weights and computes the same outputs for a given context."""
    model = DMASHSAC(
        "MlpPolicy", "Pendulum-v1", method=method, use_sde=use_sde, learning_starts=40, batch_size=32, seed=0,
        policy_kwargs=dict(net_arch=[16], hypernet_arch=[8], encoder_dim=8),
    )  # fmt: skip
    model.learn(80)
    policy = model.policy
    policy.set_training_mode(False)
    obs = th.as_tensor(np.stack([model.observation_space.sample() for _ in range(5)]))
    window = th.as_tensor(initial_window(obs.numpy(), policy.history_len, policy.action_dim)) if method == "dmash" else None
    context = policy.rl_context(obs, window, training=False)
    actions = th.as_tensor(np.stack([model.action_space.sample() for _ in range(5)]))
    for network, cls in ((model.actor, type(model.actor)), (model.critic, type(model.critic))):
        network.save(tmp_path / "network.pth")
        loaded = cls.load(tmp_path / "network.pth", device="cpu")
        assert type(loaded) is type(network)
        assert_same(network.state_dict(), loaded.state_dict())
        loaded.train(False)
        with th.no_grad():
            if cls is type(model.actor):
                if use_sde:
                    loaded.action_dist.exploration_mat = network.action_dist.exploration_mat
                th.testing.assert_close(loaded(obs, context, deterministic=True), network(obs, context, deterministic=True))
            else:
                for a, b in zip(loaded(obs, actions, context), network(obs, actions, context), strict=True):
                    th.testing.assert_close(a, b)
    # alone, the actor has no context module and no action space: predict says what to load instead
    with pytest.raises(ValueError, match=r"loaded alone.*DMASHPolicy\.load"):
        type(model.actor).load(_saved_actor(model, tmp_path)).predict(obs.numpy())


def _saved_actor(model, tmp_path):
    path = tmp_path / "actor.pth"
    model.actor.save(path)
    return path


@pytest.mark.parametrize("optimize_memory_usage", [False, True])
def test_warn_buffer(recwarn, optimize_memory_usage):
    """SB3's test_warn_buffer: no warning while learning goes on; with the memory-efficient buffer, a new learn()
    truncates the last trajectory and says so."""
    model = DMASHSAC(
        "MlpPolicy", "Pendulum-v1", buffer_size=100, optimize_memory_usage=optimize_memory_usage, learning_starts=10,
        batch_size=16, policy_kwargs=dict(net_arch=[8], hypernet_arch=[8], encoder_dim=8),
    )  # fmt: skip
    model.learn(150)
    model.learn(150, reset_num_timesteps=False)
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]
    model.learn(150)
    messages = [str(w.message) for w in recwarn if issubclass(w.category, UserWarning)]
    if optimize_memory_usage:
        assert len(messages) == 1 and "The last trajectory in the replay buffer will be truncated" in messages[0]
    else:
        assert not messages
