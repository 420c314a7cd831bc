"""The context window: the last K transitions ``(s, a, s' - s)`` of a sub-env, oldest first.

Layout of one entry: ``[s (obs_dim), a (action_dim, in [-1, 1]), s' - s (obs_dim)]``, float32. A window is
``(K, 2 obs_dim + action_dim)``; a batch of them ``(n, K, 2 obs_dim + action_dim)``. Before any transition the window
holds the observation K times, zero actions and Δs = 0 (the reference's initial window).

For code that passes one tensor where SB3 passes an observation (SB3's ``SAC.train`` on a
:class:`~sb3_dmash.common.buffers.HistoryReplayBuffer` with ``pack_windows=True``), a *packed* observation is
``[s, window.flatten()]``: ``(n, obs_dim + K (2 obs_dim + action_dim))``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch as th


class ContextState(NamedTuple):
    """State of the stateful :meth:`DMASHPolicy.predict`, one row per env (RecurrentPPO-style).

    :param window: (n_envs, K, 2 obs_dim + action_dim) the last K transitions ``(s, a, s' - s)``, oldest first.
    :param last_obs: (n_envs, obs_dim) observation of the previous call.
    :param last_action: (n_envs, action_dim) action (in [-1, 1]) returned by the previous call.
    :param has_prev: (n_envs,) whether ``last_obs``/``last_action`` hold a transition still to be appended.
    """

    window: np.ndarray
    last_obs: np.ndarray
    last_action: np.ndarray
    has_prev: np.ndarray


def entry_dim(obs_dim: int, action_dim: int) -> int:
    """Size of one window entry ``(s, a, s' - s)``."""
    return 2 * obs_dim + action_dim


def entry_components(obs_dim: int, action_dim: int) -> np.ndarray:
    """Which part of an entry each feature belongs to: 0 for s, 1 for a, 2 for Δs (whole-vector masking uses it)."""
    return np.repeat([0, 1, 2], [obs_dim, action_dim, obs_dim])


def initial_window(obs: np.ndarray, history_len: int, action_dim: int) -> np.ndarray:
    """The window before any transition: the observation repeated K times, zero actions, Δs = 0 (the reference's)."""
    n, obs_dim = obs.shape
    window = np.zeros((n, history_len, entry_dim(obs_dim, action_dim)), dtype=np.float32)
    window[:, :, :obs_dim] = obs[:, None, :]
    return window


def push_transition(window: np.ndarray, obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray) -> None:
    """Append ``(s, a, s' - s)`` as the newest entry of each row of ``window`` (in place, dropping the oldest)."""
    window[:, :-1] = window[:, 1:]
    obs_dim = obs.shape[1]
    window[:, -1, :obs_dim] = obs
    window[:, -1, obs_dim:-obs_dim] = action
    window[:, -1, -obs_dim:] = next_obs - obs


def pack(obs: th.Tensor, window: th.Tensor) -> th.Tensor:
    """``[s, window.flatten()]``: an observation that carries its window through code written for plain ones."""
    return th.cat([obs, window.reshape(window.shape[0], -1)], dim=1)


def unpack(packed: th.Tensor, obs_dim: int, history_len: int) -> tuple[th.Tensor, th.Tensor]:
    """The observation and the window ``(n, K, entry)`` of a packed observation."""
    return packed[:, :obs_dim], packed[:, obs_dim:].reshape(packed.shape[0], history_len, -1)


def normalize_window(window: np.ndarray, normalize_obs: Callable[[np.ndarray], np.ndarray], obs_dim: int) -> np.ndarray:
    """A window of raw observations as a policy trained on normalised ones reads it (``VecNormalize``): both ends of
    each transition normalised, Δs taken between them (as the replay samples)."""
    obs = window[..., :obs_dim]
    next_obs = obs + window[..., -obs_dim:]
    window = window.copy()
    window[..., :obs_dim] = normalize_obs(obs)
    window[..., -obs_dim:] = normalize_obs(next_obs) - window[..., :obs_dim]
    return window
