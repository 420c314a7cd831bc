"""Common type aliases of sb3-dmash (sample tuples of the history replay buffer)."""

from typing import NamedTuple

import torch as th


class HistoryReplayBufferSamples(NamedTuple):
    """
    A batch of transitions with the window of transitions that led to each of them.

    The first six fields are those of SB3's ``ReplayBufferSamples``, so SAC-style code keeps working.

    ``history`` has shape ``(batch_size, K + 1, 2 * obs_dim + action_dim)``: one ``(s, a, s' - s)`` entry per lag
    ``K, ..., 0``, oldest first. The last entry (lag 0) is the sampled transition itself. Invalid entries (before the
    window origin, from another context, or overwritten) are zeros and ``False`` in ``history_mask``
    (shape ``(batch_size, K + 1)``).
    """

    observations: th.Tensor
    actions: th.Tensor
    next_observations: th.Tensor
    dones: th.Tensor
    rewards: th.Tensor
    # Always None (no n-step returns); kept so the first six fields equal SB3's ReplayBufferSamples
    discounts: th.Tensor | None
    history: th.Tensor
    history_mask: th.Tensor
