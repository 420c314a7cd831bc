"""``aib.evaluate`` (the AIB protocol, ``docs/protocol.md`` §1) and ``AIBEvalCallback``.

Checked: the warm-up runs in the same contexts as the scored episode; DMASHSAC's window holds the K warm-up transitions
when the scored episode starts; actions are deterministic; per-context returns and AER per split match an independent
single-env rollout; SB3's plain SAC works; the callback's schedule, logging, records and results file.
"""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3 import SAC
from stable_baselines3.common.logger import configure

import aib
from aib.evaluation import DEFAULT_N_EPISODES, SplitResult
from sb3_dmash import DMASHSAC
from sb3_dmash.experiments.callbacks import AIBEvalCallback

POLICY_KWARGS = dict(net_arch=[16], hypernet_arch=[8], encoder_dim=8)
K = 24  # DI's window


def make_dmash(env_id="AIB-DI-v0", method="dmash", learning_starts=80, **kwargs) -> DMASHSAC:
    env_kwargs = {"context_aware": True} if method in ("concat", "decision_adapter") else None
    env = aib.make_vec_env(env_id, "train", n_envs=20, seed=0, env_kwargs=env_kwargs)
    return DMASHSAC(
        "MlpPolicy",
        env,
        method=method,
        learning_starts=learning_starts,
        batch_size=40,
        seed=0,
        policy_kwargs=POLICY_KWARGS if method != "dr" else {"net_arch": [16]},
        device="cpu",
        **kwargs,
    )


@pytest.fixture(scope="module")
def dmash_model() -> DMASHSAC:
    th.set_num_threads(1)
    model = make_dmash()
    model.learn(20 * 8)  # random phase only: the weights stay random, the wiring is what is tested
    return model


@pytest.fixture(scope="module")
def sac_model() -> SAC:
    env = aib.make_vec_env("AIB-ODE-v0", "train", n_envs=20, seed=0)
    return SAC("MlpPolicy", env, seed=0, policy_kwargs={"net_arch": [16]}, device="cpu")


class PredictSpy:
    """Wraps ``policy.predict`` and records every call's inputs and outputs."""

    def __init__(self, predict):
        self.predict = predict
        self.calls: list[dict] = []

    def __call__(self, observation, state=None, episode_start=None, deterministic=False):
        record = {
            "obs": np.array(observation, copy=True),
            "state_in": None if state is None else type(state)(*(np.array(x, copy=True) for x in state)),
            "episode_start": None if episode_start is None else np.array(episode_start, copy=True),
            "deterministic": deterministic,
        }
        action, new_state = self.predict(observation, state, episode_start, deterministic)
        record["action"] = np.array(action, copy=True)
        record["state_out"] = None if new_state is None else type(new_state)(*(np.array(x, copy=True) for x in new_state))
        self.calls.append(record)
        return action, new_state


def test_protocol_defaults():
    import inspect

    assert DEFAULT_N_EPISODES == 10
    assert inspect.signature(aib.evaluate).parameters["n_episodes"].default == 10
    assert inspect.signature(aib.evaluate).parameters["deterministic"].default is True


def test_warmup_runs_in_the_scored_contexts(dmash_model):
    results = aib.evaluate(dmash_model, "AIB-DI-v0", n_episodes=2)
    assert list(results) == ["train", "eval_in", "eval_out"]
    for split, result in results.items():
        expected = aib.get_contexts("AIB-DI-v0", split)
        assert result.warmup_steps == K
        assert result.contexts == expected
        assert result.warmup_contexts == result.contexts
        assert result.context_ids == [f"{split}/{i}" for i in range(20)]
        assert result.returns.shape == (20, 2)


def test_context_check_catches_a_changed_context(dmash_model):
    venv = aib.make_eval_vec_env("AIB-DI-v0", ["eval_in"])
    venv.env_method("set_context", ("eval_in", 5), indices=[3])  # sub-env 3 now runs another instance
    with pytest.raises(RuntimeError, match="sub-env 3 reported context 'eval_in/5'"):
        aib.evaluate(dmash_model, "AIB-DI-v0", splits=["eval_in"], n_episodes=1, vec_env=venv)
    venv.close()


def test_history_is_carried_across_the_warmup_reset(dmash_model, monkeypatch):
    spy = PredictSpy(dmash_model.policy.predict)
    monkeypatch.setattr(dmash_model.policy, "predict", spy)
    results = aib.evaluate(dmash_model, "AIB-DI-v0", splits=["eval_out"], n_episodes=1, eval_seed=123)
    calls = spy.calls
    # K warm-up calls, one call appending the last warm-up transition, then the T = 100 scored steps
    assert len(calls) == K + 1 + 100
    assert all(c["deterministic"] is True for c in calls)
    assert calls[0]["state_in"] is None and calls[0]["episode_start"].all()
    # common random numbers: every context starts the warm-up from the same initial state
    assert np.allclose(calls[0]["obs"], calls[0]["obs"][0])
    first = calls[K + 1]  # the first step of the scored episode
    assert not first["episode_start"].any(), "the scored episode must keep the window"
    assert not first["state_in"].has_prev.any(), "no transition across the reset"
    assert not np.allclose(first["obs"], calls[K]["obs"]), "the env was reset between warm-up and episode"
    obs_dim = 4
    window = first["state_in"].window
    assert window.shape == (20, K, 2 * obs_dim + 2)
    for j in range(K):  # entry j is the warm-up transition (s_j, a_j, s_{j+1} - s_j), oldest first
        s_j, s_next = calls[j]["obs"], calls[j + 1]["obs"]
        a_j = calls[j]["state_out"].last_action
        np.testing.assert_allclose(window[:, j, :obs_dim], s_j, rtol=0, atol=1e-6)
        np.testing.assert_allclose(window[:, j, obs_dim:-obs_dim], a_j, rtol=0, atol=1e-6)
        np.testing.assert_allclose(window[:, j, -obs_dim:], s_next - s_j, rtol=0, atol=1e-5)
    # the window really moved (a fresh window has zero actions and zero deltas)
    assert np.abs(window[:, :, obs_dim:]).sum() > 0
    assert results["eval_out"].returns.shape == (20, 1)


def test_without_warmup_the_scored_episode_starts_fresh(dmash_model, monkeypatch):
    spy = PredictSpy(dmash_model.policy.predict)
    monkeypatch.setattr(dmash_model.policy, "predict", spy)
    result = aib.evaluate(dmash_model, "AIB-DI-v0", splits=["train"], n_episodes=1, warmup=False)["train"]
    assert len(spy.calls) == 100 and spy.calls[0]["episode_start"].all()
    assert result.warmup_contexts is None and result.warmup_steps == 0


@pytest.mark.parametrize("which", ["dmash", "sac"])
def test_deterministic_and_reproducible(which, dmash_model, sac_model):
    model, env_id = (dmash_model, "AIB-DI-v0") if which == "dmash" else (sac_model, "AIB-ODE-v0")
    first = aib.evaluate(model, env_id, splits=["eval_in"], n_episodes=1)
    second = aib.evaluate(model, env_id, splits=["eval_in"], n_episodes=1)
    np.testing.assert_array_equal(first["eval_in"].returns, second["eval_in"].returns)


def _manual_return(model, env_id: str, context: dict, eval_seed: int, episode: int, warmup_steps: int) -> float:
    """The protocol for one context with a plain gymnasium env (SB3 model without state)."""
    env = gym.make(env_id, context=context)
    obs, _ = env.reset(seed=eval_seed + 2 * episode)
    for _ in range(warmup_steps):
        action, _ = model.predict(obs[None], deterministic=True)
        obs, *_ = env.step(action[0])
    obs, _ = env.reset(seed=eval_seed + 2 * episode + 1)
    total, done = 0.0, False
    while not done:
        action, _ = model.predict(obs[None], deterministic=True)
        obs, reward, terminated, truncated, _ = env.step(action[0])
        total += float(reward)
        done = terminated or truncated
    return total


def test_sac_per_context_returns_and_aer(sac_model):
    results = aib.evaluate(sac_model, "AIB-ODE-v0", splits=["eval_in", "eval_out"], n_episodes=2)
    eval_seed = 1_000_000 + 0  # default: 1_000_000 + model.seed
    for split, result in results.items():
        assert isinstance(result, SplitResult)
        np.testing.assert_allclose(result.per_context, result.returns.mean(axis=1))
        assert result.aer == pytest.approx(float(np.mean(result.per_context)))
        assert result.mean_reward == pytest.approx(result.aer)
        assert result.warmup_steps == 24  # the env's K for a model without history_len
        record = result.to_record()
        assert record["split"] == split and len(record["per_context"]) == 20 and record["n_episodes"] == 2
    # an independent single-env rollout of two contexts gives the same returns
    for split, index, episode in (("eval_in", 3, 1), ("eval_out", 17, 0)):
        context = aib.get_contexts("AIB-ODE-v0", split)[index]
        expected = _manual_return(sac_model, "AIB-ODE-v0", context, eval_seed, episode, 24)
        assert results[split].returns[index, episode] == pytest.approx(expected, rel=1e-5, abs=1e-4)
    assert np.any(results["eval_in"].per_context != 0)


def test_context_aware_methods_get_aware_envs():
    model = make_dmash(method="concat")
    result = aib.evaluate(model, "AIB-DI-v0", splits=["eval_out"], n_episodes=1)["eval_out"]
    assert result.returns.shape == (20, 1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"splits": ["test"]}, "split='test'"),
        ({"splits": ["train", "train"]}, "twice"),
        ({"n_episodes": 0}, "n_episodes"),
    ],
)
def test_bad_arguments(sac_model, kwargs, match):
    with pytest.raises(ValueError, match=match):
        aib.evaluate(sac_model, "AIB-ODE-v0", **kwargs)


def test_vec_env_must_match(sac_model):
    venv = aib.make_eval_vec_env("AIB-ODE-v0", ["train"])
    with pytest.raises(ValueError, match="vec_env was built for"):
        aib.evaluate(sac_model, "AIB-ODE-v0", splits=["eval_in"], vec_env=venv)
    venv.close()


# ---------------------------------------------------------------------------------------------------------- callback
def test_callback_schedule_logging_and_records(tmp_path):
    th.set_num_threads(1)
    model = make_dmash(learning_starts=20 * 4)
    model.set_logger(configure(str(tmp_path / "log"), ["csv"]))
    results_path = tmp_path / "records.jsonl"
    callback = AIBEvalCallback("AIB-DI-v0", eval_every=5, n_episodes=1, results_path=results_path, extra_fields={"run": "r0"})
    model.learn(20 * (4 + 12), callback=callback)
    # learning steps 0, 5, 10 from the schedule, 12 at the end of training
    assert callback.evaluated_steps == [0, 5, 10, 12]
    assert len(callback.records) == 4 * 3
    first = callback.records[0]
    assert first["split"] == "train" and first["step"] == 0 and first["vector_step"] == 4 and first["timesteps"] == 80
    assert first["run"] == "r0" and len(first["per_context"]) == 20
    assert first["aer"] == pytest.approx(np.mean(first["per_context"]))
    lines = [json.loads(line) for line in results_path.read_text().splitlines()]
    assert lines == json.loads(json.dumps(callback.records))
    progress = (tmp_path / "log" / "progress.csv").read_text().splitlines()[0].split(",")
    for split in ("train", "eval_in", "eval_out"):
        assert f"eval/{split}/aer" in progress and f"eval/{split}/mean_reward" in progress
        assert f"eval/{split}/context_19" in progress
    best = callback.best_of_last_two()
    for split in ("train", "eval_in", "eval_out"):
        last_two = [r["aer"] for r in callback.records if r["split"] == split and r["step"] in (10, 12)]
        assert best[split] == max(last_two)


def test_callback_final2_with_sac_and_training_unchanged():
    """``final2`` evaluates at total - eval_every and at the end; evaluating does not change what is learnt."""
    th.set_num_threads(1)

    def train(with_callback: bool):
        env = aib.make_vec_env("AIB-ODE-v0", "train", n_envs=20, seed=0)
        model = SAC("MlpPolicy", env, learning_starts=20 * 3, batch_size=40, seed=0, policy_kwargs={"net_arch": [16]})
        callback = AIBEvalCallback("AIB-ODE-v0", eval_every=4, splits=["eval_out"], n_episodes=1, schedule="final2")
        model.learn(20 * (3 + 10), callback=callback if with_callback else None)
        return model, callback

    model, callback = train(True)
    assert callback.evaluated_steps == [6, 10]
    assert [r["split"] for r in callback.records] == ["eval_out", "eval_out"]
    reference, _ = train(False)
    for p, q in zip(model.policy.parameters(), reference.policy.parameters(), strict=True):
        th.testing.assert_close(p, q, rtol=0, atol=0)


def test_callback_rejects_bad_arguments():
    with pytest.raises(ValueError, match="eval_every"):
        AIBEvalCallback("AIB-DI-v0", eval_every=0)
    with pytest.raises(ValueError, match="schedule"):
        AIBEvalCallback("AIB-DI-v0", schedule="sometimes")


def test_long_evaluations_show_progress(sac_model, monkeypatch, capsys):
    from aib import evaluation

    aib.evaluate(sac_model, "AIB-ODE-v0", splits=("eval_out",), n_episodes=2)
    assert capsys.readouterr().err == ""  # a short evaluation stays silent

    class SlowEpisodes(evaluation._Progress):  # as if every episode took 30 s: past the 10 s threshold
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            ticks = iter(range(30, 1000, 30))
            self.clock, self.start, self.last = (lambda: next(ticks)), 0, 0

    monkeypatch.setattr(evaluation, "_Progress", SlowEpisodes)
    aib.evaluate(sac_model, "AIB-ODE-v0", splits=("eval_out",), n_episodes=2)
    err = capsys.readouterr().err
    assert "aib.evaluate AIB-ODE-v0 (eval_out): 1/2 episodes per context, 30 s, ETA 30 s" in err
    assert "2/2 episodes per context, 60 s" in err
    aib.evaluate(sac_model, "AIB-ODE-v0", splits=("eval_out",), n_episodes=2, progress=False)
    assert capsys.readouterr().err == ""


class ConstantModel:
    """Always pushes with +0.5 on every action dimension (no state), so the inversion is visible in the rewards."""

    seed = 0

    def __init__(self, action_dim: int) -> None:
        self.action_dim = action_dim

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        return np.full((len(observation), self.action_dim), 0.5, dtype=np.float32), None


def test_fault_protocol_splits_the_return_at_the_fault():
    model = ConstantModel(aib.make_vec_env("AIB-DI-v0", n_envs=1).action_space.shape[0])
    kwargs = dict(splits=("eval_out",), n_episodes=2, warmup_steps=K)
    plain = aib.evaluate(model, "AIB-DI-v0", **kwargs)["eval_out"]
    fault = aib.evaluate(model, "AIB-DI-v0", invert_at=50, **kwargs)["eval_out"]
    later = aib.evaluate(model, "AIB-DI-v0", invert_at=76, **kwargs)["eval_out"]
    assert fault.rewards.shape == (20, 2, 100) and fault.invert_at == 50 and fault.recovery_window == K
    np.testing.assert_allclose(fault.returns_before + fault.returns_after, fault.returns)
    # the same actions and seeds: identical rewards before the fault (the context check saw every context flip at 50)
    np.testing.assert_array_equal(fault.rewards[..., :50], later.rewards[..., :50])
    assert not np.array_equal(fault.rewards[..., 50:76], later.rewards[..., 50:76])  # the inversion changes the episode
    record = fault.to_record()
    assert record["invert_at"] == 50 and record["return_after"] == pytest.approx(fault.returns_after.mean())
    assert {"recovery_median", "recovery_censored", "recovery_undefined"} <= set(record)
    assert record["reward_trace_start"] == 50 - K and len(record["reward_trace"]) == 100 - (50 - K)
    assert "invert_at" not in plain.to_record()
    with pytest.raises(ValueError, match="has no fault"):
        _ = plain.returns_after


@pytest.mark.parametrize("invert_at", [0, 10, 177, 2.5, True])
def test_fault_step_must_leave_the_warmup_and_a_recovery_window(sac_model, invert_at):
    with pytest.raises(ValueError, match=rf"invert_at={invert_at!r} must be an integer from 24 .* to 176"):
        aib.evaluate(sac_model, "AIB-ODE-v0", splits=("eval_out",), n_episodes=1, invert_at=invert_at)
