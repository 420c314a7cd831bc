"""The recovery time of the fault protocol on synthetic reward traces with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from aib.evaluation import recovery_times

T, FAULT, K = 40, 20, 4


def trace(after):
    """Reward 1 at every step before the fault, then ``after``."""
    return np.concatenate([np.ones(FAULT), np.asarray(after, dtype=float)])


def test_immediate_recovery():
    times, censored, defined = recovery_times(trace(np.ones(T - FAULT)), FAULT, K)
    assert times == 0 and not censored and defined


def test_never_recovers_is_censored_at_the_last_start():
    times, censored, defined = recovery_times(trace(np.zeros(T - FAULT)), FAULT, K)
    assert censored and defined and times == T - FAULT - K + 1


@pytest.mark.parametrize("n", [1, 5, 12])
def test_recovers_after_n_steps(n):
    after = np.concatenate([np.zeros(n), np.ones(T - FAULT - n)])
    times, censored, _ = recovery_times(trace(after), FAULT, K)
    assert times == n and not censored


def test_level_is_relative_to_the_pre_fault_window():
    # pre-fault level 2 over the last K steps (the zeros before do not count); a window of 1.9 >= 0.9 x 2 is recovered
    rewards = np.concatenate([np.zeros(FAULT - K), np.full(K, 2.0), np.full(3, 1.0), np.full(T - FAULT - 3, 1.9)])
    times, censored, _ = recovery_times(rewards, FAULT, K)
    assert times == 3 and not censored


def test_partial_recovery_inside_the_window():
    # a window with one zero and three ones averages 0.75 < 0.9: recovered only once the whole window is back at 1
    after = np.concatenate([np.zeros(2), np.ones(T - FAULT - 2)])
    times, _, _ = recovery_times(trace(after), FAULT, K)
    assert times == 2


def test_no_reward_before_the_fault_has_no_recovery_time():
    rewards = np.stack([np.zeros(T), trace(np.ones(T - FAULT))])
    times, censored, defined = recovery_times(rewards, FAULT, K)
    assert np.isnan(times[0]) and not defined[0] and not censored[0]
    assert times[1] == 0 and defined[1]


def test_batched_shapes_and_bad_fault_steps():
    rewards = np.ones((3, 2, T))
    times, censored, defined = recovery_times(rewards, FAULT, K)
    assert times.shape == censored.shape == defined.shape == (3, 2)
    for bad in (0, T - K + 1):
        with pytest.raises(ValueError, match=rf"fault_step={bad} must leave"):
            recovery_times(rewards, bad, K)
