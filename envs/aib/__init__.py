"""AIB, the Actuator Inversion Benchmark: contextual gymnasium environments with hidden, discontinuous contexts.

``import aib`` registers the ids ``AIB-<Name>-v0`` with gymnasium (after ``pip install sb3-dmash`` a startup hook
registers them even without the import). The context is hidden from the observation; ``info["context"]`` reports it.

>>> import gymnasium as gym
>>> env = gym.make("AIB-DI-v0", context={"mass": 0.8, "action_factor": -1})
>>> env = gym.make("AIB-DI-v0", split="eval_out")          # each episode draws one of the split's 20 contexts
>>> aib.splits("AIB-DI-v0")["train"][0]
{'mass': 0.5, 'action_factor': -1.0}
"""

from __future__ import annotations

from typing import Any

from aib.contexts import (
    SPLITS,
    ContextSplit,
    ContextVariable,
    context_variables,
    default_context,
    get_contexts,
    splits,
    validate_context,
)
from aib.registration import ENVS, SUITES, EnvInfo, env_info, list_envs, register_envs

__version__ = "0.1.0"

register_envs()

# Loaded on first use: `import aib` (run by the startup hook while gymnasium imports) needs only numpy and the
# registry, and stable-baselines3 is needed only for the VecEnv helpers.
_LAZY = {
    "make_vec_env": "aib.vec_env",
    "AssignContexts": "aib.vec_env",
    "ActuatorInversion": "aib.wrappers",
    "evaluate": "aib.evaluation",
    "SplitResult": "aib.evaluation",
    "make_eval_vec_env": "aib.evaluation",
    "NonFiniteActionError": "aib.evaluation",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'aib' has no attribute {name!r}")


__all__ = [
    "ENVS",
    "SPLITS",
    "SUITES",
    "ActuatorInversion",
    "AssignContexts",
    "ContextSplit",
    "ContextVariable",
    "EnvInfo",
    "NonFiniteActionError",
    "SplitResult",
    "context_variables",
    "default_context",
    "env_info",
    "evaluate",
    "get_contexts",
    "list_envs",
    "make_eval_vec_env",
    "make_vec_env",
    "register_envs",
    "splits",
    "validate_context",
]
