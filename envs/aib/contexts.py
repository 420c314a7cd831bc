"""Context variables and the named context splits of the Actuator Inversion Benchmark.

Every AIB environment varies two context variables (``k`` for ODE-k). This module defines them, validates
user-supplied contexts, and builds the three named splits (``train``, ``eval_in``, ``eval_out``) of 20 contexts each,
exactly as the paper's reference implementation builds them (see ``docs/benchmark.md``):

* a continuous variable gets a 50-value grid per split (train: its training range; eval_in: the training range shrunk
  by a 1 % margin; eval_out: 25 values below and 25 above the training range), rounded to 4 decimals with ``np.round``;
* a binary variable (``action_factor``, ``swap``) takes both of its values in every split;
* with at most two variables the Cartesian product is sorted lexicographically and 20 combinations are picked at
  ``np.linspace(0, len - 1, 20, dtype=int)``; with more variables (ODE-k, k > 2) 20 combinations are drawn with numpy's
  legacy ``RandomState(split_seed)`` and sorted.

This module imports only numpy and the standard library.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

SPLITS: tuple[str, ...] = ("train", "eval_in", "eval_out")
"""The three named splits of every AIB environment, in the order the paper reports them."""

N_CONTEXTS = 20
GRID_SIZE = 50
BENCHMARK_VERSION = "AIB-v2"


@dataclasses.dataclass(frozen=True)
class ContextVariable:
    """One context variable of an environment.

    :param name: key in the context dict.
    :param default: the nominal value.
    :param train_range: ``(a, b)`` training range of a continuous variable.
    :param out_range: ``(A, B)`` range of the eval_out split of a continuous variable (``A < a`` and ``b < B``).
    :param values: the allowed values of a binary variable (it is then not gridded).
    :param lower: smallest physically valid value of a continuous variable (``None``: unbounded).
    :param lower_inclusive: whether ``lower`` itself is valid.
    :param description: what the variable changes, for error messages and docs.
    """

    name: str
    default: float
    train_range: tuple[float, float] | None = None
    out_range: tuple[float, float] | None = None
    values: tuple[float, ...] | None = None
    lower: float | None = None
    lower_inclusive: bool = False
    description: str = ""

    @property
    def is_binary(self) -> bool:
        return self.values is not None

    def allowed(self) -> str:
        """Human-readable description of the allowed values, used in error messages."""
        if self.values is not None:
            return "one of " + ", ".join(_fmt(v) for v in self.values)
        if self.lower is None:
            return "a finite real number"
        return f"a finite real number {'>=' if self.lower_inclusive else '>'} {_fmt(self.lower)}"

    def validate(self, value: Any) -> float:
        """Return ``value`` as a float, or raise ``ValueError`` naming the key, the value and what is allowed."""
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            raise ValueError(f"context[{self.name!r}] = {value!r} has type {type(value).__name__}; expected {self.allowed()}")
        value = float(value)
        if self.values is not None:
            if value not in self.values:
                raise ValueError(f"context[{self.name!r}] = {value!r} is not allowed; expected {self.allowed()}")
            return value
        if not math.isfinite(value) or (
            self.lower is not None and (value < self.lower or (value == self.lower and not self.lower_inclusive))
        ):
            raise ValueError(f"context[{self.name!r}] = {value!r} is not allowed; expected {self.allowed()}")
        return value

    def grid(self, split: str) -> list[float]:
        """The value list of this variable for ``split`` (50 grid values, or the binary values)."""
        if self.values is not None:
            return list(self.values)
        assert self.train_range is not None and self.out_range is not None
        a, b = self.train_range
        lo, hi = self.out_range
        margin = 0.01 * (b - a)
        if split == "train":
            grid = np.round(np.linspace(a, b, GRID_SIZE), 4)
        elif split == "eval_in":
            grid = np.round(np.linspace(a + margin, b - margin, GRID_SIZE), 4)
        elif split == "eval_out":
            half = GRID_SIZE // 2
            grid = np.concatenate(
                [np.round(np.linspace(lo, a - margin, half), 4), np.round(np.linspace(b + margin, hi, half), 4)]
            )
        else:
            raise ValueError(f"split={split!r} is not a gridded split; expected one of {SPLITS}")
        return [float(v) for v in grid]


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _mass() -> ContextVariable:
    return ContextVariable("mass", 1.0, (0.5, 1.5), (0.1, 2.0), lower=0.0, description="point mass")


def _action_factor() -> ContextVariable:
    return ContextVariable("action_factor", 1.0, values=(-1.0, 1.0), description="sign applied to every action")


def _swap() -> ContextVariable:
    return ContextVariable("swap", 0.0, values=(0.0, 1.0), description="1 swaps the two action channels")


def _gravity(train: tuple[float, float], out: tuple[float, float]) -> ContextVariable:
    return ContextVariable("gravity", 9.81, train, out, lower=0.0, lower_inclusive=True, description="gravity (m/s^2)")


def _strength() -> ContextVariable:
    return ContextVariable(
        "actuator_strength", 1.0, (0.5, 1.5), (0.1, 2.0), lower=0.0, lower_inclusive=True, description="gear multiplier"
    )


def _length(default: float, train: tuple[float, float], out: tuple[float, float], what: str) -> ContextVariable:
    return ContextVariable("length", default, train, out, lower=0.0, description=what)


def _ode_parameter(j: int) -> ContextVariable:
    # Nominal c = (1, 0, ..., 0): a well-posed first-order task (the reference's class default is 1.0 for every
    # parameter and its context table says 0.0; the splits never use the default).
    return ContextVariable(f"parameter_{j}", 1.0 if j == 0 else 0.0, (-5.0, 5.0), (-10.0, 10.0), description=f"c_{j}")


_WALKER_GRAVITY = ((4.91, 14.71), (0.98, 19.62))
_MORPH_LENGTH = _length(1.0, (0.8, 1.2), (0.4, 1.6), "limb length scale")

_CONTEXT_VARIABLES: dict[str, tuple[ContextVariable, ...]] = {
    "AIB-DI-v0": (_mass(), _action_factor()),
    "AIB-DIFriction-v0": (
        _mass(),
        ContextVariable("friction", 1.0, (0.5, 1.5), (0.1, 2.0), lower=0.0, lower_inclusive=True, description="friction"),
    ),
    "AIB-DIPerm-v0": (_mass(), _swap()),
    "AIB-Cartpole-v0": (_length(0.5, (0.3, 0.85), (0.1, 2.0), "pole half-length (m)"), _action_factor()),
    "AIB-BallInCup-v0": (
        _gravity((8.0, 12.0), (1.0, 20.0)),
        ContextVariable("distance", 0.3, (0.24, 0.36), (0.1, 0.5), lower=0.0, description="string length (m)"),
    ),
    "AIB-Walker-v0": (_gravity(*_WALKER_GRAVITY), _strength()),
    "AIB-Cheetah-v0": (_MORPH_LENGTH, _action_factor()),
    "AIB-ReacherEasy-v0": (_MORPH_LENGTH, _action_factor()),
    "AIB-ReacherHard-v0": (_MORPH_LENGTH, _action_factor()),
    "AIB-ReacherHardPerm-v0": (_MORPH_LENGTH, _swap()),
    "AIB-WalkerGym-v0": (_gravity(*_WALKER_GRAVITY), _strength()),
    "AIB-HopperGym-v0": (_gravity(*_WALKER_GRAVITY), _strength()),
}

ODE_ID = "AIB-ODE-v0"
MAX_ODE_K = 20

_HANDCRAFTED = {
    # The paper's embedding diagnostic (v2 Fig. 4): inversion +-1 x mass {0.8, 1.0, 1.3}.
    "AIB-DI-v0": [{"mass": m, "action_factor": f} for f in (1.0, -1.0) for m in (0.8, 1.0, 1.3)],
}


def context_variables(env_id: str, k: int = 2) -> tuple[ContextVariable, ...]:
    """The varied context variables of ``env_id`` in the order of its context table.

    :param env_id: an AIB id such as ``"AIB-DI-v0"``.
    :param k: number of ODE parameters (``AIB-ODE-v0`` only).
    """
    if env_id == ODE_ID:
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 1 <= k <= MAX_ODE_K:
            raise ValueError(f"k={k!r} is not allowed for {ODE_ID}; expected an integer from 1 to {MAX_ODE_K}")
        return tuple(_ode_parameter(j) for j in range(int(k)))
    if env_id not in _CONTEXT_VARIABLES:
        raise ValueError(
            f"env_id={env_id!r} is not an AIB environment; expected one of {sorted([*_CONTEXT_VARIABLES, ODE_ID])}"
        )
    return _CONTEXT_VARIABLES[env_id]


def default_context(env_id: str, k: int = 2) -> dict[str, float]:
    """The nominal context of ``env_id`` (action_factor +1, swap 0, defaults elsewhere; ODE c = (1, 0, ...))."""
    return {var.name: var.default for var in context_variables(env_id, k)}


def validate_context(env_id: str, context: Mapping[str, Any] | None, k: int = 2) -> dict[str, float]:
    """Complete ``context`` with the defaults and validate every value.

    :raises ValueError: for an unknown key, a wrong type or a value the physics cannot take; the message names the
        key, the value and what is allowed.
    """
    variables = context_variables(env_id, k)
    if context is None:
        context = {}
    if not isinstance(context, Mapping):
        raise ValueError(f"context={context!r} must be a dict of context values for {env_id}")
    names = [var.name for var in variables]
    unknown = [key for key in context if key not in names]
    if unknown:
        raise ValueError(f"context key {unknown[0]!r} is unknown for {env_id}; allowed keys: {names}")
    return {var.name: var.validate(context[var.name]) if var.name in context else var.default for var in variables}


def get_contexts(env_id: str, split: str, seed: int | None = None, k: int = 2) -> list[dict[str, float]]:
    """The contexts of one named split, in sub-env order (sub-env ``i`` runs context ``i``).

    :param env_id: an AIB id.
    :param split: ``"train"``, ``"eval_in"``, ``"eval_out"``, or ``"handcrafted_train"`` (DI only: the six contexts
        of the paper's embedding diagnostic).
    :param seed: split seed; only the random construction used with more than two variables (ODE-k, k > 2) reads it
        (default 0).
    :param k: number of ODE parameters (``AIB-ODE-v0`` only).
    """
    variables = context_variables(env_id, k)
    if split == "handcrafted_train":
        if env_id not in _HANDCRAFTED:
            raise ValueError(f"split='handcrafted_train' exists only for {sorted(_HANDCRAFTED)}, not {env_id}")
        return [dict(c) for c in _HANDCRAFTED[env_id]]
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not allowed; expected one of {SPLITS}")
    names = [var.name for var in variables]
    if len(variables) <= 2:
        mesh = sorted(itertools.product(*(var.grid(split) for var in variables)))
        if len(mesh) >= N_CONTEXTS:
            chosen = [mesh[i] for i in np.linspace(0, len(mesh) - 1, N_CONTEXTS, dtype=int)]
        else:
            chosen = [c for c in mesh for _ in range(N_CONTEXTS // len(mesh))] + mesh[: N_CONTEXTS % len(mesh)]
    else:
        # The reference draws all three splits from one legacy RandomState stream: train, then eval_in, then eval_out.
        rng = np.random.RandomState(0 if seed is None else seed)
        for name in SPLITS:
            grids = [var.grid(name) for var in variables]
            drawn = sorted(tuple(float(rng.choice(g)) for g in grids) for _ in range(N_CONTEXTS))
            if name == split:
                chosen = drawn
                break
    return [dict(zip(names, (float(v) for v in combo), strict=True)) for combo in chosen]


def splits(env_id: str, seed: int | None = None, k: int = 2) -> dict[str, list[dict[str, float]]]:
    """The three named splits of ``env_id``: ``{"train": [...], "eval_in": [...], "eval_out": [...]}``, 20 each."""
    return {split: get_contexts(env_id, split, seed=seed, k=k) for split in SPLITS}


@dataclasses.dataclass(frozen=True)
class ContextSplit:
    """A frozen, serialisable named split: what a results table needs to say which contexts were used.

    :param env_id: the AIB id.
    :param split: the split name.
    :param contexts: the context dicts in sub-env order.
    :param env_kwargs: the env kwargs that shape the context space (``k`` for ODE).
    :param seed: the split seed (only the ODE-k random construction reads it).
    :param version: the benchmark version the split belongs to.
    """

    env_id: str
    split: str
    contexts: tuple[Mapping[str, float], ...]
    env_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    seed: int | None = None
    version: str = BENCHMARK_VERSION

    @classmethod
    def build(cls, env_id: str, split: str, seed: int | None = None, **env_kwargs: Any) -> ContextSplit:
        contexts = get_contexts(env_id, split, seed=seed, k=env_kwargs.get("k", 2))
        return cls(env_id, split, tuple(contexts), dict(env_kwargs), seed)

    def __len__(self) -> int:
        return len(self.contexts)

    def __getitem__(self, index: int) -> dict[str, float]:
        return dict(self.contexts[index])

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["contexts"] = [dict(c) for c in self.contexts]
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ContextSplit:
        data = json.loads(text)
        data["contexts"] = tuple(data["contexts"])
        return cls(**data)


def parse_context_ref(ref: Sequence[Any]) -> tuple[str, int]:
    """Check a ``(split, index)`` reference and return it."""
    if len(ref) != 2 or not isinstance(ref[0], str) or isinstance(ref[1], bool) or not isinstance(ref[1], numbers.Integral):
        raise ValueError(f"context reference {ref!r} must be a (split, index) pair such as ('train', 3)")
    return ref[0], int(ref[1])
