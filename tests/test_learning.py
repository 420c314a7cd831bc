"""Learning checks that can fail: the dynamics loss falls and the inferred z separates the two inversion modes.

Seeded and small (a few hundred update rounds on AIB-DI-v0) so that they run in CI; the full comparison with SAC is
``examples/train_di.py``.
"""

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.callbacks import BaseCallback

import aib
from sb3_dmash import DMASHSAC
from sb3_dmash.diagnostics import collect_embeddings, linear_probe_accuracy


class RecordDynamicsLoss(BaseCallback):
    def __init__(self):
        super().__init__()
        self.losses = []

    def _on_rollout_start(self) -> None:
        value = self.model.logger.name_to_value.get("train/dynamics_loss")
        if value is not None and (not self.losses or value != self.losses[-1]):
            self.losses.append(value)

    def _on_step(self) -> bool:
        return True


@pytest.fixture(scope="module")
def trained_di():
    th.manual_seed(0)
    env = aib.make_vec_env("AIB-DI-v0", "train", n_envs=20, seed=0)
    model = DMASHSAC(
        "MlpPolicy",
        env,
        learning_starts=1_000,
        batch_size=240,
        seed=0,
        policy_kwargs=dict(net_arch=[64, 64]),
    )
    recorder = RecordDynamicsLoss()
    model.learn(13_000, callback=recorder)  # 600 vector steps, 600 update rounds
    return model, recorder.losses


def test_dynamics_loss_falls(trained_di):
    _, losses = trained_di
    assert len(losses) > 100
    first, last = np.mean(losses[:5]), np.mean(losses[-20:])
    assert last < 0.3 * first, (first, last)


def test_inferred_context_separates_inversion_modes(trained_di):
    model, _ = trained_di
    train = collect_embeddings(model, "AIB-DI-v0", "train", n_episodes=2, steps_per_episode=20, seed=0)
    held_out = collect_embeddings(model, "AIB-DI-v0", "eval_in", n_episodes=1, steps_per_episode=20, seed=100)
    keys = list(train["context_keys"])
    sign = keys.index("action_factor")
    accuracy = linear_probe_accuracy(train["z"], train["context"][:, sign], held_out["z"], held_out["context"][:, sign])
    assert accuracy > 0.9, accuracy
