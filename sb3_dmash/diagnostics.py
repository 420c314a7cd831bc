"""Offline diagnostics of the inferred context z (never run inside training).

:func:`collect_embeddings` rolls a trained model out on one split of an AIB environment, carrying the context window
as :meth:`~sb3_dmash.dmash.policies.DMASHPolicy.predict` does, and returns the eval-mode z of every visited step with
the true context. :func:`linear_probe_accuracy` asks whether a linear classifier on z recovers a binary context factor
(the inversion sign) on held-out episodes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th


def collect_embeddings(
    model: Any,
    env_id: str,
    split: str = "train",
    n_episodes: int = 2,
    steps_per_episode: int | None = None,
    skip_first: int | None = None,
    deterministic: bool = True,
    seed: int = 0,
    env_kwargs: dict[str, Any] | None = None,
) -> dict[str, np.ndarray]:
    """Roll ``model`` out on the 20 contexts of ``split`` and record z at every step.

    :param model: a trained :class:`~sb3_dmash.DMASHSAC`.
    :param env_id: an AIB id.
    :param split: the split whose contexts are visited (one per sub-env).
    :param n_episodes: episodes per context.
    :param steps_per_episode: steps recorded per episode (default: the whole episode).
    :param skip_first: steps at the start of each episode that are not recorded (default: K, so that every recorded
        window holds K real transitions).
    :param deterministic: deterministic actions.
    :param seed: reset seed of episode 0 (episode e uses ``seed + e``).
    :param env_kwargs: further env kwargs.
    :return: ``{"z": (N, context_dim), "context": (N, n_context_keys), "context_keys": (n_keys,), "context_index": (N,),
        "episode": (N,)}``.
    """
    import aib

    venv = aib.make_vec_env(env_id, split, n_envs=20, seed=seed, env_kwargs=env_kwargs)
    policy = model.policy
    keys = list(aib.context_variables(env_id, **({"k": env_kwargs["k"]} if env_kwargs and "k" in env_kwargs else {})))
    keys = [var.name for var in keys]
    skip = policy.history_len if skip_first is None else skip_first
    zs, contexts, indices, episodes = [], [], [], []
    for episode in range(n_episodes):
        venv.seed(seed + episode)
        obs = venv.reset()
        infos = venv.reset_infos
        state, starts = None, np.ones(venv.num_envs, dtype=bool)
        t = 0
        while True:
            actions, state = policy.predict(obs, state=state, episode_start=starts, deterministic=deterministic)
            if t >= skip and (steps_per_episode is None or t < skip + steps_per_episode):
                with th.no_grad():
                    z = policy.context(th.as_tensor(state.window, device=policy.device), training=False)
                zs.append(z.cpu().numpy())
                contexts.append([[info["context"][k] for k in keys] for info in infos])
                indices.append(np.arange(venv.num_envs))
                episodes.append(np.full(venv.num_envs, episode))
            obs, _, dones, infos = venv.step(actions)
            starts = dones
            t += 1
            if dones.any() or (steps_per_episode is not None and t >= skip + steps_per_episode):
                break
    venv.close()
    return {
        "z": np.concatenate(zs),
        "context": np.asarray(np.concatenate(contexts), dtype=np.float64),
        "context_keys": np.array(keys),
        "context_index": np.concatenate(indices),
        "episode": np.concatenate(episodes),
    }


def linear_probe_accuracy(z_train: np.ndarray, y_train: np.ndarray, z_test: np.ndarray, y_test: np.ndarray) -> float:
    """Accuracy on ``(z_test, y_test)`` of a least-squares linear classifier fitted on ``(z_train, y_train)``.

    ``y`` holds two classes (any two values, e.g. the inversion sign -1/+1).
    """
    classes = np.unique(y_train)
    if len(classes) != 2:
        raise ValueError(f"the probe needs exactly two classes in y_train, got {classes}")
    target = np.where(y_train == classes[1], 1.0, -1.0)
    design = np.hstack([z_train, np.ones((len(z_train), 1))])
    weights, *_ = np.linalg.lstsq(design, target, rcond=None)
    scores = np.hstack([z_test, np.ones((len(z_test), 1))]) @ weights
    predicted = np.where(scores > 0, classes[1], classes[0])
    return float(np.mean(predicted == y_test))
