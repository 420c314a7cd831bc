"""``sb3-dmash bench``: a resumable grid of AIB environments x methods x seeds, run locally or on Ray.

Every run trains one model (``DMASHSAC(method=...)``, SB3's plain ``SAC`` for ``method="sac"``, sb3-contrib's
``RecurrentPPO`` for ``method="recurrent_ppo"``) on the 20
training contexts of one environment (sub-env ``i`` runs context ``i``), evaluates it with the AIB protocol
(:class:`~sb3_dmash.experiments.callbacks.AIBEvalCallback`) every ``eval_every`` vector steps and at the end, and returns
one record per split and evaluation step. Budgets are in **vector steps** (one ``step`` of all sub-envs).

Layout of the output folder::

    <out>/grid.json            the grid (run specs) and the metadata of the last invocation (command, versions, commit)
    <out>/runs/<run_id>.json   one finished run: {"status": "ok" | "diverged", "spec", "meta", "records", "duration_s"}
    <out>/runs/<run_id>.error.json   a crashed run: {"status": "error", "spec", "meta", "traceback"}
    <out>/results.csv          the tidy table of every run of the folder that finished "ok" (per_context as JSON)
    <out>/results.jsonl        the same rows as JSON lines
    <out>/checkpoints/<run_id>/  the newest in-run snapshot of a run in progress (removed once the run is stored)
    <out>/models/<run_id>.zip  the trained model (only with ``save_models=True`` / ``--save-models``)
    <out>/.lock                held by the driver using the folder

**Resume rule.** A run is finished when ``runs/<run_id>.json`` exists with status ``"ok"`` or ``"diverged"`` and the
spec it stores equals the run's spec; a finished run is never redone. The run id is built from the env, method and
seed plus a hash of the whole spec (budget, network sizes, eval settings...), so changing any setting makes new runs
instead of reusing old ones. Each file is written atomically (a temporary file in the same folder, ``fsync``, then
``os.replace``), so killing the process at any moment leaves either the finished file or nothing. An unfinished run
continues from its last in-run checkpoint (:class:`~sb3_dmash.experiments.run_checkpoint.RunCheckpoint`, written after every
evaluation) and produces the numbers of an uninterrupted run. A run whose losses, parameters or actions become
non-finite is stored as ``"diverged"`` with its reason and kept out of the tables. A crashed run writes
``<run_id>.error.json`` with its traceback, is listed in the summary and makes the command exit non-zero; it is retried
by the next invocation (``retry_failed=False`` keeps it failed). The tables are rebuilt from the run files after every
finished run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

SPLIT_ORDER = ("train", "eval_in", "eval_out")
EXTRA_METHODS = ("sac", "recurrent_ppo")
"""Methods besides the DMASHSAC presets: ``"sac"`` is SB3's plain SAC (context-unaware, not stratified);
``"recurrent_ppo"`` is sb3-contrib's RecurrentPPO (an LSTM policy; hyperparameters from ``hyperparams/ppo_lstm.yml``)."""

TABLE_COLUMNS = (
    "run_id",
    "env",
    "env_id",
    "env_kwargs",
    "env_name",
    "env_class",
    "method",
    "method_name",
    "seed",
    "split",
    "step",
    "vector_step",
    "timesteps",
    "aer",
    "mean_reward",
    "n_episodes",
    "per_context",
    "budget",
    "learning_starts",
    "eval_every",
    "eval_schedule",
    "n_envs",
    "commit",
    "sb3_dmash_version",
    "duration_s",
    "invert_at",
    "return_before",
    "return_after",
    "recovery_median",
    "recovery_censored",
    "recovery_undefined",
    "reward_trace_start",
    "reward_trace",
)
"""Columns of the results table, in order (``per_context``, ``env_kwargs`` and ``reward_trace`` are JSON in the CSV).
``duration_s`` is the run's wall-clock (the sum of its segments when it resumed from checkpoints; for a fault
evaluation, the evaluation's). The columns from ``invert_at`` on are filled by the fault protocol only
(``--invert-at``, ``sb3-dmash faults``)."""


# ---------------------------------------------------------------------------------------------------------- specs
def parse_env(text: str) -> tuple[str, dict[str, Any]]:
    """``"AIB-ODE-v0:k=5"`` -> ``("AIB-ODE-v0", {"k": 5})``; values are parsed as JSON when possible."""
    env_id, _, rest = text.partition(":")
    kwargs: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"env spec {text!r}: expected ENV_ID[:key=value,...], got item {item!r}")
        try:
            kwargs[key] = json.loads(value)
        except json.JSONDecodeError:
            kwargs[key] = value
    return env_id, kwargs


def env_key(env_id: str, env_kwargs: Mapping[str, Any] | None = None) -> str:
    """The env column of the table: the id, with ``:key=value,...`` (sorted) when there are env kwargs."""
    if not env_kwargs:
        return env_id
    return env_id + ":" + ",".join(f"{k}={json.dumps(v)}" for k, v in sorted(env_kwargs.items()))


def env_display_name(env_id: str, env_kwargs: Mapping[str, Any] | None = None) -> str:
    """The paper's name (``"ODE-k5"`` for ``AIB-ODE-v0`` with ``k=5``)."""
    from aib.registration import env_info

    name = env_info(env_id).name
    if env_kwargs and "k" in env_kwargs and env_id == "AIB-ODE-v0" and env_kwargs["k"] != 2:
        name = f"ODE-k{env_kwargs['k']}"
    return name


def method_display_name(method: str) -> str:
    from sb3_dmash.dmash.presets import PAPER_NAMES

    return PAPER_NAMES.get(method, {"sac": "SAC", "recurrent_ppo": "RecurrentPPO"}.get(method, method))


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """Everything that determines one run (and its id).

    :param env_id: the AIB id.
    :param env_kwargs: env kwargs (``{"k": 5}`` for ODE-k); ``context_aware`` is added for Concat/DA.
    :param method: a ``DMASHSAC`` method, ``"sac"`` or ``"recurrent_ppo"``.
    :param seed: the run seed (model, training envs; evaluation seed ``1_000_000 + seed``).
    :param budget: learning vector steps after the random phase.
    :param learning_starts: vector steps of uniform random actions first.
    :param eval_every: vector steps between evaluations.
    :param eval_schedule: ``"every"`` or ``"final2"``.
    :param n_envs: training sub-envs (sub-env ``i`` runs training context ``i mod 20``).
    :param eval_episodes: scored episodes per context.
    :param splits: evaluated splits.
    :param policy_kwargs: policy kwargs (``net_arch``, ``hypernet_arch``, ``encoder_dim``...).
    :param hyperparams: further constructor kwargs of the algorithm (``batch_size``, ``buffer_size``...).
    :param invert_at: evaluate with the fault protocol (:func:`aib.evaluate`'s ``invert_at``), or ``None``. Left out of
        :meth:`to_dict` (and so of the run id) when ``None``, so that the runs of earlier versions keep their ids.
    """

    env_id: str
    method: str
    seed: int
    budget: int
    learning_starts: int = 5_000
    eval_every: int = 5_000
    eval_schedule: str = "every"
    n_envs: int = 20
    eval_episodes: int = 10
    splits: tuple[str, ...] = SPLIT_ORDER
    env_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    policy_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    hyperparams: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    invert_at: int | None = None

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if self.invert_at is None:
            del data["invert_at"]
        data["splits"] = list(self.splits)
        data["env_kwargs"] = dict(self.env_kwargs)
        data["policy_kwargs"] = dict(self.policy_kwargs)
        data["hyperparams"] = dict(self.hyperparams)
        return json.loads(json.dumps(data, sort_keys=True))  # canonical (tuples -> lists)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunSpec:
        data = dict(data)
        data["splits"] = tuple(data["splits"])
        return cls(**data)

    @property
    def env(self) -> str:
        return env_key(self.env_id, self.env_kwargs)

    @property
    def run_id(self) -> str:
        digest = hashlib.sha1(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:10]
        slug = self.env.replace(":", "_").replace(",", "_").replace("=", "-").replace('"', "")
        return f"{slug}__{self.method}__seed{self.seed}__{digest}"


def make_grid(
    envs: Iterable[str | tuple[str, Mapping[str, Any]]],
    methods: Iterable[str],
    seeds: Iterable[int],
    budget: int | str | None = None,
    **common: Any,
) -> list[RunSpec]:
    """The run specs of envs x methods x seeds (env-major order).

    :param envs: ids, ``"ID:key=value"`` strings, or ``(id, env_kwargs)`` pairs.
    :param methods: ``DMASHSAC`` methods or ``"sac"``.
    :param seeds: run seeds.
    :param budget: learning vector steps, or ``None``/``"paper"`` for each env's paper budget (``aib.env_info``).
    :param common: the other :class:`RunSpec` fields.
    """
    import numbers

    from aib.registration import env_info
    from sb3_dmash.dmash.presets import METHODS

    n_envs = common.get("n_envs", 1)  # RunSpec's default is valid; 0 would fail deep inside SB3's make_vec_env
    if isinstance(n_envs, bool) or not isinstance(n_envs, numbers.Integral) or n_envs < 1:
        raise ValueError(f"n_envs must be an integer >= 1, got {n_envs!r}")
    parsed = []
    for env in envs:
        env_id, kwargs = parse_env(env) if isinstance(env, str) else (env[0], dict(env[1]))
        env_info(env_id)  # raises on unknown ids
        parsed.append((env_id, kwargs))
    methods = list(methods)
    for method in methods:
        if method not in METHODS and method not in EXTRA_METHODS:
            raise ValueError(f"method={method!r} is unknown; expected one of {[*METHODS, *EXTRA_METHODS]}")
    seeds = [int(s) for s in seeds]
    if not parsed or not methods or not seeds:
        raise ValueError("the grid needs at least one env, one method and one seed")
    specs = []
    for env_id, kwargs in parsed:
        env_budget = env_info(env_id).budget if budget in (None, "paper") else int(budget)  # type: ignore[arg-type]
        for method in methods:
            for seed in seeds:
                specs.append(RunSpec(env_id=env_id, env_kwargs=kwargs, method=method, seed=seed, budget=env_budget, **common))
    ids = [s.run_id for s in specs]
    if len(set(ids)) != len(ids):
        raise ValueError("the grid lists a run twice (repeated env, method or seed)")
    return specs


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r} must be an integer >= {minimum}")


def _check_keys(what: str, given: Mapping[str, Any], allowed: Iterable[str], hint: str) -> None:
    import difflib

    allowed = sorted(allowed)
    for key in given:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=3)
            suggestion = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
            raise ValueError(f"{what} key {key!r} is not accepted by {hint}{suggestion}; allowed: {', '.join(allowed)}")


def validate_settings(
    methods: Sequence[str],
    budget: int | str | None,
    learning_starts: int,
    eval_every: int,
    eval_schedule: str,
    n_envs: int,
    eval_episodes: int,
    splits: Sequence[str],
    policy_kwargs: Mapping[str, Any] | None,
    hyperparams: Mapping[str, Any] | None,
    envs: Iterable[str | tuple[str, Mapping[str, Any]]] | None = None,
) -> None:
    """Check every setting of a grid once, before any run starts (one clear message instead of one crash per run).

    :param envs: the grid's envs (as :func:`make_grid` takes them); with ``recurrent_ppo`` they are needed to check
        that each env's ``n_steps`` divides the evaluation points (:func:`check_rollout_alignment`).
    :raises ValueError: naming the setting, the value and what is allowed.
    """
    import inspect

    from aib.evaluation import _check_splits

    if budget not in (None, "paper"):
        _check_int("budget", budget, 1)
    _check_int("learning_starts", learning_starts, 0)
    _check_int("eval_every", eval_every, 1)
    _check_int("eval_episodes", eval_episodes, 1)
    _check_int("n_envs", n_envs, 1)
    if eval_schedule not in ("every", "final2"):
        raise ValueError(f"eval_schedule={eval_schedule!r} is not allowed; expected 'every' or 'final2'")
    _check_splits(splits)
    # The keys bench sets itself may be overridden; anything else must be a constructor argument
    from sb3_dmash.dmash.policies import DMASHPolicy

    dmash_policy_args = set(inspect.signature(DMASHPolicy.__init__).parameters) - {"self", "observation_space", "action_space"}
    dmash_policy_args -= {"lr_schedule"}
    if any(m not in EXTRA_METHODS for m in methods):
        from sb3_dmash.dmash.dmash_sac import DMASHSAC

        algorithm_args = set(inspect.signature(DMASHSAC.__init__).parameters)
        algorithm_args -= {"self", "policy", "env", "policy_kwargs", "method", "_init_setup_model"}  # set per run
        _check_keys("hyperparams", hyperparams or {}, algorithm_args, "DMASHSAC")
        _check_keys("policy_kwargs", policy_kwargs or {}, dmash_policy_args, "DMASHPolicy")
    if "sac" in methods:
        from stable_baselines3 import SAC

        sac_args = set(inspect.signature(SAC.__init__).parameters)
        sac_args -= {"self", "policy", "env", "policy_kwargs", "_init_setup_model"}
        _check_keys("hyperparams", hyperparams or {}, sac_args, "SB3's SAC (method 'sac')")
    if "recurrent_ppo" in methods:
        try:
            recurrent_ppo = _recurrent_ppo_class()
        except ImportError as exc:
            raise ValueError(str(exc)) from None
        ppo_args = set(inspect.signature(recurrent_ppo.__init__).parameters)
        ppo_args -= {"self", "policy", "env", "policy_kwargs", "_init_setup_model"}
        _check_keys("hyperparams", hyperparams or {}, ppo_args, "sb3-contrib's RecurrentPPO (method 'recurrent_ppo')")
        # recurrent_ppo ignores the DMASHPolicy-only keys (as 'sac' does), so a grid may mix it with the presets
        allowed = _recurrent_policy_args() | dmash_policy_args
        _check_keys("policy_kwargs", policy_kwargs or {}, allowed, "RecurrentActorCriticPolicy or DMASHPolicy")
        from aib.registration import env_info

        for env in envs or ():
            env_id, _ = parse_env(env) if isinstance(env, str) else (env[0], env[1])
            env_budget = env_info(env_id).budget if budget in (None, "paper") else int(budget)  # type: ignore[arg-type]
            check_rollout_alignment(env_id, learning_starts, eval_every, env_budget, hyperparams)


def _check_fault_step(invert_at: Any, envs: Iterable[str | tuple[str, Mapping[str, Any]]]) -> None:
    """The fault must come after the K-step warm-up and leave a K-step recovery window in every env of the grid."""
    from aib.registration import env_info

    for env in envs:
        env_id = parse_env(env)[0] if isinstance(env, str) else env[0]
        info = env_info(env_id)
        k, horizon = info.history_len, info.max_episode_steps
        if isinstance(invert_at, bool) or not isinstance(invert_at, int) or not k <= invert_at <= horizon - k:
            raise ValueError(
                f"invert_at={invert_at!r} does not fit {env_id}: it must be an integer from {k} (after the K-step "
                f"warm-up) to {horizon - k} (a K-step recovery window before the end of its {horizon}-step episodes)"
            )


# ---------------------------------------------------------------------------------------------------------- metadata
def _code_paths() -> list[str]:
    """The folders of the code a run executes: the ``sb3_dmash`` and ``aib`` packages."""
    import aib

    return [os.path.dirname(os.path.dirname(os.path.abspath(__file__))), os.path.dirname(os.path.abspath(aib.__file__))]


def git_commit(path: str | os.PathLike | None = None) -> str:
    """``<sha>`` of the checkout holding this package, ``<sha>+dirty`` if the code that runs (the ``sb3_dmash`` and
    ``aib`` packages) has uncommitted changes, or ``"unknown"``.

    Other tracked files do not count: a study writing its results into the same checkout leaves the code clean.
    """
    cwd = os.fspath(path) if path is not None else os.path.dirname(os.path.abspath(__file__))
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", *_code_paths()],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha + ("+dirty" if dirty else "") if sha else "unknown"


def versions() -> dict[str, str]:
    """Versions of Python and of the packages a result depends on."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("sb3-dmash", "stable-baselines3", "torch", "gymnasium", "numpy", "mujoco", "dm_control"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


_COMMIT: str | None = None


def run_metadata() -> dict[str, Any]:
    global _COMMIT
    if _COMMIT is None:
        _COMMIT = git_commit()
    return {"commit": _COMMIT, "versions": versions(), "host": platform.node()}


# ---------------------------------------------------------------------------------------------------------- one run
def _default_buffer_size(spec: RunSpec) -> int:
    """The reference's 1e5 transitions per context (whole episodes), capped by what the run can collect.

    The methods that infer the context also store their K warm-up rows per episode (history only, never sampled), so
    their columns get room for those on top; the window-free methods write no warm-up rows and get exactly the
    reference's capacity.
    """
    from aib.registration import env_info
    from sb3_dmash.dmash.presets import METHODS
    from sb3_dmash.dmash.routing import ContextRouting

    info = env_info(spec.env_id)
    episodes = -(-100_000 // info.max_episode_steps)
    preset = METHODS.get(spec.method)  # None: SB3's SAC, RecurrentPPO (no history buffer)
    if preset is None or not ContextRouting.from_settings(preset).infers_context:
        per_column = min(episodes * info.max_episode_steps, spec.learning_starts + spec.budget)
        return max(per_column, 2) * spec.n_envs
    per_row = (info.max_episode_steps + info.history_len) / info.max_episode_steps
    paper = spec.n_envs * episodes * (info.max_episode_steps + info.history_len)
    needed = int((spec.learning_starts + spec.budget) * spec.n_envs * per_row) + spec.n_envs * (info.history_len + 2)
    return max(min(paper, needed), spec.n_envs * 2)


def _train_env(spec: RunSpec) -> Any:
    """The training VecEnv of a run: sub-env ``i`` runs training context ``i mod 20``."""
    import aib

    return aib.make_vec_env(spec.env_id, "train", n_envs=spec.n_envs, seed=spec.seed, env_kwargs=_env_kwargs(spec))


def _env_kwargs(spec: RunSpec) -> dict[str, Any]:
    env_kwargs = dict(spec.env_kwargs)
    if spec.method in ("concat", "decision_adapter"):
        env_kwargs["context_aware"] = True
    return env_kwargs


def _recurrent_ppo_class() -> type:
    try:
        from sb3_contrib import RecurrentPPO
    except ImportError as exc:
        raise ImportError(f"method 'recurrent_ppo' needs sb3-contrib: pip install \"sb3-dmash[zoo]\" ({exc})") from exc
    return RecurrentPPO


def _recurrent_policy_args() -> set[str]:
    """The keyword arguments of sb3-contrib's ``RecurrentActorCriticPolicy`` that policy kwargs may set."""
    import inspect

    from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy

    args = set(inspect.signature(RecurrentActorCriticPolicy.__init__).parameters)
    return args - {"self", "observation_space", "action_space", "lr_schedule"}


_ZOO_ONLY_KEYS = ("policy", "n_envs", "n_timesteps", "env_kwargs", "vec_env_wrapper")
"""Keys of ``ppo_lstm.yml`` that rl-zoo3 reads itself; bench sets them per run (every other key is a RecurrentPPO
constructor argument)."""


def recurrent_ppo_settings(env_id: str) -> tuple[str, dict[str, Any]]:
    """The policy and the RecurrentPPO constructor kwargs of ``env_id`` in ``hyperparams/ppo_lstm.yml``.

    The rl-zoo3 file is the one source of truth of ``--algo ppo_lstm`` and of bench's ``recurrent_ppo``; bench sets
    the number of sub-envs, the budget and the training env itself.

    :param env_id: an AIB id.
    :return: ``(policy, kwargs)``; ``kwargs["policy_kwargs"]`` is a dict.
    :raises ValueError: when the file has no entry for ``env_id``.
    """
    import yaml

    from sb3_dmash.zoo import hyperparams_file

    path = hyperparams_file("ppo_lstm.yml")
    with open(path, encoding="utf-8") as f:
        entries = yaml.safe_load(f)
    if env_id not in entries:
        raise ValueError(f"{path} has no entry for {env_id}")
    kwargs = {k: v for k, v in entries[env_id].items() if k not in _ZOO_ONLY_KEYS}
    policy_kwargs = kwargs.get("policy_kwargs") or {}
    if isinstance(policy_kwargs, str):  # rl-zoo3's "dict(...)" syntax
        import torch.nn as nn

        policy_kwargs = eval(policy_kwargs, {"__builtins__": {}, "dict": dict, "nn": nn})
    kwargs["policy_kwargs"] = dict(policy_kwargs)
    return str(entries[env_id].get("policy", "MlpLstmPolicy")), kwargs


def check_rollout_alignment(
    env_id: str, learning_starts: int, eval_every: int, budget: int, hyperparams: Mapping[str, Any] | None = None
) -> int:
    """Check that RecurrentPPO's updates fall on every evaluation point and on the end of training; return ``n_steps``.

    RecurrentPPO updates after each rollout of ``n_steps`` vector steps, and :class:`AIBEvalCallback` evaluates at
    rollout starts (right after an update, as after SAC's update round). If ``n_steps`` divides ``learning_starts``,
    ``eval_every`` and ``budget``, every evaluation lands exactly on the same learning vector steps as for the other
    methods and training stops exactly at ``(learning_starts + budget) x n_envs`` environment steps.

    :param env_id: the AIB id (its ``n_steps`` comes from ``ppo_lstm.yml``).
    :param learning_starts: vector steps before learning step 0.
    :param eval_every: vector steps between evaluations.
    :param budget: learning vector steps.
    :param hyperparams: the run's hyperparams; an ``n_steps`` there replaces the yml's.
    :raises ValueError: naming the setting that ``n_steps`` does not divide and the largest ``n_steps`` that fits.
    """
    import math

    n_steps = (hyperparams or {}).get("n_steps") or recurrent_ppo_settings(env_id)[1]["n_steps"]
    for name, value in (("learning_starts", learning_starts), ("eval_every", eval_every), ("budget", budget)):
        if value % n_steps:
            fits = math.gcd(learning_starts, eval_every, budget)
            raise ValueError(
                f"recurrent_ppo on {env_id}: n_steps={n_steps} (vector steps per update) does not divide {name}={value}; "
                f"it must divide learning_starts, eval_every and budget so that every evaluation and the end of training "
                f"fall on an update. Pass --hyperparams '{{\"n_steps\": N}}' with N dividing {fits} (in a bench invocation of "
                f"its own: the other methods take no n_steps)"
            )
    return int(n_steps)


def _recurrent_policy_kwargs(spec: RunSpec, base: Mapping[str, Any]) -> dict[str, Any]:
    """The yml's policy kwargs with the run's on top: ``net_arch`` sets the MLP after the LSTM and, by its first
    width, the LSTM size (unless ``lstm_hidden_size`` is given); DMASHPolicy-only keys are ignored."""
    policy_kwargs = dict(base)
    net_arch = spec.policy_kwargs.get("net_arch")
    if isinstance(net_arch, (list, tuple)) and net_arch:
        policy_kwargs["lstm_hidden_size"] = int(net_arch[0])
    allowed = _recurrent_policy_args()
    policy_kwargs.update({k: v for k, v in spec.policy_kwargs.items() if k in allowed})
    return policy_kwargs


def _algorithm_class(spec: RunSpec) -> type:
    if spec.method == "sac":
        from stable_baselines3 import SAC

        return SAC
    if spec.method == "recurrent_ppo":
        return _recurrent_ppo_class()
    from sb3_dmash.dmash.dmash_sac import DMASHSAC

    return DMASHSAC


def _build_recurrent_ppo(spec: RunSpec) -> Any:
    """sb3-contrib's RecurrentPPO with the yml's settings for the env (``spec.hyperparams`` on top). It has no random
    phase: the ``learning_starts`` vector steps are PPO training too, so that every method sees the same number of
    environment steps, ``(learning_starts + budget) x n_envs``."""
    algorithm = _recurrent_ppo_class()
    policy, kwargs = recurrent_ppo_settings(spec.env_id)
    policy_kwargs = _recurrent_policy_kwargs(spec, kwargs.pop("policy_kwargs"))
    kwargs.update(spec.hyperparams)
    check_rollout_alignment(spec.env_id, spec.learning_starts, spec.eval_every, spec.budget, kwargs)
    return algorithm(
        policy,
        _train_env(spec),
        **{**kwargs, "policy_kwargs": policy_kwargs, "seed": spec.seed, "verbose": 0, "device": "cpu"},
    )


def build_model(spec: RunSpec) -> Any:
    """The model of a run, on its training VecEnv (sub-env ``i`` runs training context ``i mod 20``)."""
    if spec.method == "recurrent_ppo":
        return _build_recurrent_ppo(spec)
    env = _train_env(spec)
    kwargs: dict[str, Any] = {
        "learning_starts": spec.learning_starts * spec.n_envs,
        "buffer_size": _default_buffer_size(spec),
        "train_freq": 1,
        "gradient_steps": 1,
        "seed": spec.seed,
        "verbose": 0,
        "device": "cpu",
    }
    algorithm = _algorithm_class(spec)
    if spec.method == "sac":
        kwargs["batch_size"] = 240
        policy_kwargs = {k: v for k, v in spec.policy_kwargs.items() if k == "net_arch"}
        return algorithm("MlpPolicy", env, **{**kwargs, **spec.hyperparams, "policy_kwargs": policy_kwargs})
    kwargs["batch_size"] = 256
    return algorithm(
        "MlpPolicy", env, method=spec.method, **{**kwargs, **spec.hyperparams, "policy_kwargs": dict(spec.policy_kwargs)}
    )


def _limit_threads() -> None:
    """One torch thread per run (several runs share the cores) and the allocator settings of our entry points."""
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    import torch as th

    from sb3_dmash.experiments.utils import tune_malloc

    th.set_num_threads(1)
    tune_malloc()


class RunDiverged(FloatingPointError):
    """A run stopped on a non-finite loss, parameter or action; ``records`` holds its evaluations before that."""

    def __init__(self, reason: str, records: list[dict[str, Any]], elapsed_s: float) -> None:
        super().__init__(reason)
        self.records = records
        self.elapsed_s = elapsed_s


def _checkpoint_callback(checkpoint: Any, elapsed_before: float) -> Any:
    """After each evaluation but the final one: snapshot the run with its evaluation history and elapsed time."""
    from stable_baselines3.common.callbacks import BaseCallback

    class CheckpointAfterEval(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.started = time.time()

        def _on_step(self) -> bool:
            if self.model.num_timesteps < self.model._total_timesteps:  # the final evaluation ends the run instead
                history = {
                    "records": self.parent.records,  # type: ignore[union-attr]
                    "evaluated_steps": self.parent.evaluated_steps,  # type: ignore[union-attr]
                    "elapsed_s": elapsed_before + time.time() - self.started,
                }
                checkpoint.save(self.model, history)
            return True

    return CheckpointAfterEval()


def _write_line(text: str) -> None:
    """A line on stderr that does not break a tqdm bar of this process."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        print(text, file=sys.stderr, flush=True)
    else:
        tqdm.write(text, file=sys.stderr)


def _format_minutes(seconds: float) -> str:
    minutes = seconds / 60
    return f"{minutes:.1f} min" if minutes < 90 else f"{minutes / 60:.1f} h"


def _progress_callback(spec: RunSpec, evaluations: Any, interval_s: float = 120.0) -> Any:
    """One line on stderr after each evaluation and every ``interval_s`` seconds between them: the run's learning
    steps, elapsed time, ETA (from the rate since this process started it) and latest AERs."""
    from stable_baselines3.common.callbacks import BaseCallback

    label = f"[{spec.env} {spec.method} seed {spec.seed}]"

    class RunProgress(BaseCallback):
        def _on_training_start(self) -> None:
            self.started, self.start_steps = time.time(), self.model.num_timesteps
            self.last_line, self.seen = self.started, len(evaluations.evaluated_steps)

        def line(self) -> None:
            done = max(self.model.num_timesteps // self.model.n_envs - spec.learning_starts, 0)
            elapsed = time.time() - self.started
            rate = (self.model.num_timesteps - self.start_steps) / max(elapsed, 1e-9)
            left = self.model._total_timesteps - self.model.num_timesteps
            eta = f"ETA {_format_minutes(left / rate)}" if rate > 0 else "ETA unknown"
            latest = ""
            if evaluations.evaluated_steps:
                step = evaluations.evaluated_steps[-1]
                scores = ", ".join(f"{r['split']} {r['aer']:.1f}" for r in evaluations.records if r["step"] == step)
                latest = f"; AER at step {step:,}: {scores}"
            _write_line(
                f"{label} {done:,}/{spec.budget:,} learning vector steps ({100 * done / spec.budget:.0f} %), "
                f"{_format_minutes(elapsed)} in this process, {eta}{latest}"
            )
            self.last_line, self.seen = time.time(), len(evaluations.evaluated_steps)

        def _on_step(self) -> bool:
            if len(evaluations.evaluated_steps) != self.seen or time.time() - self.last_line >= interval_s:
                self.line()
            return True

        def _on_training_end(self) -> None:
            self.line()

    return RunProgress()


def train_and_evaluate(
    spec: RunSpec, model_path: str | None = None, checkpoint_dir: str | None = None, progress: bool = False
) -> tuple[list[dict[str, Any]], float]:
    """Train and evaluate one run; return its table rows (without the run's metadata columns) and its training time.

    :param spec: the run.
    :param model_path: where to save the trained model (``model.save``), or ``None``.
    :param checkpoint_dir: snapshot the run there after every evaluation and, if a snapshot is there already, resume
        from it exactly (:class:`~sb3_dmash.experiments.run_checkpoint.RunCheckpoint`): the resumed run produces the same
        evaluations as an uninterrupted one.
    :param progress: print the run's progress with an ETA to stderr (after each evaluation, and every 2 minutes).
    :raises RunDiverged: on a non-finite loss, parameter or action.
    """
    import warnings

    from sb3_dmash.experiments.callbacks import AIBEvalCallback
    from sb3_dmash.experiments.run_checkpoint import RunCheckpoint

    _limit_threads()
    # SB3's make_vec_env asks every env for render_mode="rgb_array", which the AIB envs do not list: noise in a sweep
    warnings.filterwarnings("ignore", message=".*render_mode='rgb_array'.*")
    checkpoint = RunCheckpoint(checkpoint_dir) if checkpoint_dir is not None else None
    history: dict[str, Any] = {"records": [], "evaluated_steps": [], "elapsed_s": 0.0}
    if checkpoint is not None and checkpoint.exists():
        model, history = checkpoint.load(_algorithm_class(spec), _train_env(spec), device="cpu")
    else:
        model = build_model(spec)
    callback = AIBEvalCallback(
        spec.env_id,
        eval_every=spec.eval_every,
        splits=spec.splits,
        n_episodes=spec.eval_episodes,
        eval_seed=1_000_000 + spec.seed,
        env_kwargs=_env_kwargs(spec),
        learning_starts=spec.learning_starts,
        schedule=spec.eval_schedule,
        callback_after_eval=None if checkpoint is None else _checkpoint_callback(checkpoint, history["elapsed_s"]),
        invert_at=spec.invert_at,
    )
    callback.restore(history["records"], history["evaluated_steps"])
    callbacks = [callback, _progress_callback(spec, callback)] if progress else [callback]
    total = (spec.learning_starts + spec.budget) * spec.n_envs
    start = time.time()
    try:
        model.learn(total - model.num_timesteps, callback=callbacks, reset_num_timesteps=model.num_timesteps == 0)
    except FloatingPointError as exc:  # DivergenceError (training) or aib.NonFiniteActionError (evaluation)
        raise RunDiverged(
            f"{type(exc).__name__}: {exc}", callback.records, history["elapsed_s"] + time.time() - start
        ) from exc
    if model_path is not None:
        Path(model_path).parent.mkdir(parents=True, exist_ok=True)
        model.save(model_path)
    model.env.close()
    return callback.records, history["elapsed_s"] + time.time() - start


def execute(
    spec_dict: Mapping[str, Any], model_dir: str | None = None, checkpoint_dir: str | None = None, progress: bool = False
) -> dict[str, Any]:
    """Run one spec and return its payload: status ``"ok"`` with records, ``"diverged"`` with the reason and the
    evaluations before it, or ``"error"`` with the traceback.

    Never raises for a failing run: the caller writes the payload. Used by every backend.

    :param spec_dict: the run (:meth:`RunSpec.to_dict`).
    :param model_dir: save the trained model as ``<model_dir>/<run_id>.zip``, or ``None``.
    :param checkpoint_dir: keep the run's in-run checkpoints in ``<checkpoint_dir>/<run_id>/`` and resume from them.
    :param progress: print the run's progress lines (learning steps, ETA, latest AERs) to stderr.
    """
    spec = RunSpec.from_dict(spec_dict)
    meta = run_metadata()
    start = time.time()
    payload: dict[str, Any] = {"run_id": spec.run_id, "spec": spec.to_dict(), "meta": meta, "pid": os.getpid()}
    try:
        model_path = None if model_dir is None else str(Path(model_dir) / f"{spec.run_id}.zip")
        run_checkpoints = None if checkpoint_dir is None else str(Path(checkpoint_dir) / spec.run_id)
        records, duration = train_and_evaluate(spec, model_path, run_checkpoints, progress)
    except RunDiverged as exc:
        payload.update(status="diverged", reason=str(exc), records=exc.records, duration_s=exc.elapsed_s)
    except Exception as exc:  # KeyboardInterrupt and SystemExit stop the sweep instead
        payload.update(
            status="error",
            error=f"{type(exc).__name__}: {exc}",
            traceback=traceback.format_exc(),
            duration_s=time.time() - start,
        )
    else:
        payload.update(status="ok", records=records, duration_s=duration)
    return payload


# ---------------------------------------------------------------------------------------------------------- files
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically: a temporary file in the same folder, fsync, then ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp creates 0600; the files of a study follow the umask like any other
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def _run_path(out: Path, run_id: str, error: bool = False) -> Path:
    return out / "runs" / (f"{run_id}.error.json" if error else f"{run_id}.json")


FINISHED_STATUSES = ("ok", "diverged")
"""A run with one of these statuses is never redone: ``"diverged"`` would diverge again with the same seed."""


def load_run(out: str | os.PathLike, spec: RunSpec) -> dict[str, Any] | None:
    """The finished payload of ``spec`` in ``out`` (``ok`` or ``diverged``), or ``None`` (missing, unreadable, or for
    another spec)."""
    path = _run_path(Path(out), spec.run_id)
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if payload.get("status") not in FINISHED_STATUSES or payload.get("spec") != spec.to_dict():
        return None
    return payload


def finished_runs(out: str | os.PathLike) -> list[dict[str, Any]]:
    """Every finished run payload in ``out/runs`` (``ok`` and ``diverged``), whatever invocation produced it, sorted by
    env, method and seed."""
    payloads = []
    for path in sorted((Path(out) / "runs").glob("*.json")):
        if path.name.endswith(".error.json"):
            continue
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if payload.get("status") in FINISHED_STATUSES and "spec" in payload:
            payloads.append(payload)
    payloads.sort(key=lambda p: (p["spec"]["env_id"], p["spec"]["method"], p["spec"]["seed"], p["run_id"]))
    return payloads


def check_same_settings(out: str | os.PathLike, specs: Sequence[RunSpec], hint: str) -> None:
    """Refuse ``specs`` when ``out`` already holds a finished run of one of their (env, method, seed) cells with other
    settings: a report scores one run per cell and would refuse the folder (``check_one_run_per_cell``), after hours
    of training.

    :param hint: what to do instead (named in the error).
    :raises ValueError: naming the cell, the run already there and the settings that differ.
    """
    cells = {(s.env, s.method, s.seed): s for s in specs}
    for payload in finished_runs(out):
        there = RunSpec.from_dict(payload["spec"])
        spec = cells.get((there.env, there.method, there.seed))
        if spec is None or spec.run_id == there.run_id:
            continue
        ours, theirs = spec.to_dict(), there.to_dict()
        differ = ", ".join(
            f"{key} {theirs.get(key)!r} there, {ours.get(key)!r} here"
            for key in sorted(set(ours) | set(theirs))
            if ours.get(key) != theirs.get(key)
        )
        raise ValueError(
            f"{out} already holds a run of {there.env} {there.method} seed {there.seed} with other settings "
            f"({payload['run_id']}: {differ}); a report scores one run per env, method and seed, so the two could "
            f"not be reported together. {hint}"
        )


def load_error(out: str | os.PathLike, spec: RunSpec) -> dict[str, Any] | None:
    try:
        return json.loads(_run_path(Path(out), spec.run_id, error=True).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_payload(out: str | os.PathLike, payload: Mapping[str, Any]) -> Path:
    """Store a run's payload atomically; a finished run removes an earlier error file of the run."""
    out = Path(out)
    error = payload["status"] not in FINISHED_STATUSES
    path = _run_path(out, payload["run_id"], error=error)
    atomic_write_text(path, json.dumps(payload, sort_keys=True, indent=1) + "\n")
    if not error:
        try:
            _run_path(out, payload["run_id"], error=True).unlink()
        except FileNotFoundError:
            pass
    return path


def payload_rows(payload: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The table rows of a finished run: its records with the run's columns."""
    from aib.registration import env_info

    spec = RunSpec.from_dict(payload["spec"])
    run = {
        "run_id": spec.run_id,
        "env": spec.env,
        "env_id": spec.env_id,
        "env_kwargs": dict(spec.env_kwargs),
        "env_name": env_display_name(spec.env_id, spec.env_kwargs),
        "env_class": env_info(spec.env_id).env_class,
        "method": spec.method,
        "method_name": method_display_name(spec.method),
        "seed": spec.seed,
        "budget": spec.budget,
        "learning_starts": spec.learning_starts,
        "eval_every": spec.eval_every,
        "eval_schedule": spec.eval_schedule,
        "n_envs": spec.n_envs,
        "commit": payload["meta"].get("commit", "unknown"),
        "sb3_dmash_version": payload["meta"].get("versions", {}).get("sb3-dmash", "unknown"),
        "duration_s": payload.get("duration_s"),
    }
    rows = []
    for record in payload["records"]:
        row = {**run, **{k: v for k, v in record.items() if k in TABLE_COLUMNS and k not in run}}
        rows.append({col: row.get(col) for col in TABLE_COLUMNS})
    split_rank = {s: i for i, s in enumerate(SPLIT_ORDER)}
    rows.sort(key=lambda r: (r["step"], split_rank.get(r["split"], 99)))
    return rows


def _csv_cell(value: Any) -> Any:
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True)
    return value


def write_tables(out: str | os.PathLike, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write ``results.csv`` and ``results.jsonl`` atomically."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(TABLE_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_cell(row.get(k)) for k in TABLE_COLUMNS})
    atomic_write_text(Path(out) / "results.csv", buf.getvalue())
    atomic_write_text(Path(out) / "results.jsonl", "".join(json.dumps(dict(r), sort_keys=True) + "\n" for r in rows))


def collect_rows(out: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of every run of ``out`` that finished with status ``ok``, whatever invocation produced it.

    Diverged runs have no rows: their evaluations (if any) are kept in their run files and listed by the report, but
    never enter a table or an aggregate.
    """
    rows: list[dict[str, Any]] = []
    for payload in finished_runs(out):
        if payload["status"] == "ok":
            rows.extend(payload_rows(payload))
    return rows


def diverged_runs(out: str | os.PathLike) -> list[dict[str, Any]]:
    """``{"run_id", "env", "method", "seed", "reason"}`` of each diverged run of ``out``."""
    return [
        {
            "run_id": p["run_id"],
            "env": env_key(p["spec"]["env_id"], p["spec"].get("env_kwargs")),
            "method": p["spec"]["method"],
            "seed": p["spec"]["seed"],
            "reason": p.get("reason", ""),
        }
        for p in finished_runs(out)
        if p["status"] == "diverged"
    ]


# ---------------------------------------------------------------------------------------------------------- backends
def _watch_parent(parent_pid: int) -> None:
    """In a pool worker: exit when the driver dies (so that a killed sweep leaves no orphan training)."""

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)
            time.sleep(1.0)

    threading.Thread(target=watch, daemon=True).start()


def _child_main(
    spec: dict[str, Any],
    model_dir: str | None,
    checkpoint_dir: str | None,
    run_progress: bool,
    parent_pid: int,
    results: Any,
) -> None:
    """One run in its own process: the driver owns Ctrl-C (it stops the children), the child sends its payload."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _limit_threads()
    _watch_parent(parent_pid)
    results.put(execute(spec, model_dir, checkpoint_dir, run_progress))


def _run_local(
    pending: Sequence[RunSpec],
    workers: int,
    on_payload: Callable[[dict[str, Any]], None],
    progress: Any,
    model_dir: str | None = None,
    checkpoint_dir: str | None = None,
    run_progress: bool = False,
) -> None:
    if workers <= 1:
        for spec in pending:
            progress.set_postfix_str(f"{spec.env} {spec.method} seed {spec.seed}", refresh=True)
            on_payload(execute(spec.to_dict(), model_dir, checkpoint_dir, run_progress))
        return
    import multiprocessing as mp
    import queue

    # One process per run, not a pool: when a process dies (OOM kill, segfault, a stray kill) the driver knows which
    # run it held, records that run alone as crashed, and the other runs go on.
    ctx = mp.get_context("spawn")  # no forked torch / thread state
    results = ctx.Queue()
    waiting = list(pending)
    running: dict[str, tuple[Any, RunSpec]] = {}

    def receive(timeout: float) -> bool:
        try:
            payload = results.get(timeout=timeout)
        except queue.Empty:
            return False
        process, _ = running.pop(payload["run_id"])
        process.join()
        on_payload(payload)
        return True

    try:
        while waiting or running:
            while waiting and len(running) < workers:
                spec = waiting.pop(0)
                process = ctx.Process(
                    target=_child_main,
                    args=(spec.to_dict(), model_dir, checkpoint_dir, run_progress, os.getpid(), results),
                    name=f"sb3-dmash {spec.run_id}",
                )
                process.start()
                running[spec.run_id] = (process, spec)
            if receive(timeout=1.0):
                continue
            for run_id, (process, spec) in list(running.items()):
                if process.is_alive():
                    continue
                while receive(timeout=0.5):  # a payload sent just before the exit
                    pass
                if run_id in running:
                    process.join()
                    del running[run_id]
                    on_payload(_crash_payload(spec, ProcessDied(process.exitcode)))
    except KeyboardInterrupt:
        # Stop the runs in progress now (their checkpoints keep them) instead of waiting hours for them to finish
        for process, _ in running.values():
            process.terminate()
        for process, _ in running.values():
            process.join(timeout=30)
        raise


class ProcessDied(RuntimeError):
    """The process of a run ended without a result."""

    def __init__(self, exitcode: int | None) -> None:
        if exitcode is not None and exitcode < 0:
            name = signal.Signals(-exitcode).name
            hint = " (the kernel's OOM killer sends it when memory runs out)" if name == "SIGKILL" else ""
            reason = f"was killed by {name}{hint}"
        else:
            reason = f"exited with code {exitcode}"
        super().__init__(f"the run's process {reason} before it returned a result; the next invocation runs it again")


def _crash_payload(spec: RunSpec, exc: BaseException) -> dict[str, Any]:
    return {
        "run_id": spec.run_id,
        "spec": spec.to_dict(),
        "meta": run_metadata(),
        "status": "error",
        "error": f"{type(exc).__name__}: {exc}",
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    }


def _run_ray(
    pending: Sequence[RunSpec],
    workers: int,
    address: str | None,
    on_payload: Callable[[dict[str, Any]], None],
    model_dir: str | None = None,
    checkpoint_dir: str | None = None,
    run_progress: bool = False,
) -> None:
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("backend='ray' needs Ray: pip install 'sb3-dmash[ray]'") from exc
    started = False
    if not ray.is_initialized():
        env_vars = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        if address:
            ray.init(address=address, runtime_env={"env_vars": env_vars}, log_to_driver=False)
        else:
            ray.init(
                num_cpus=max(1, workers), include_dashboard=False, runtime_env={"env_vars": env_vars}, log_to_driver=False
            )
        started = True
    try:
        remote = ray.remote(num_cpus=1, max_retries=0)(execute)
        futures = {remote.remote(spec.to_dict(), model_dir, checkpoint_dir, run_progress): spec for spec in pending}
        remaining = list(futures)
        while remaining:
            done, remaining = ray.wait(remaining, num_returns=1)
            for ref in done:
                try:
                    payload = ray.get(ref)
                except Exception as exc:  # the task's worker died
                    payload = _crash_payload(futures[ref], exc)
                on_payload(payload)
    finally:
        if started:
            ray.shutdown()


class _NoBar:
    """Stands in for tqdm when it is not installed."""

    def __init__(self, total: int, initial: int) -> None:
        self.n, self.total = initial, total

    def update(self, n: int = 1) -> None:
        self.n += n
        print(f"runs: {self.n}/{self.total}", file=sys.stderr, flush=True)

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        pass

    def write(self, text: str, file: Any = None) -> None:
        print(text, file=file or sys.stderr, flush=True)

    def close(self) -> None:
        pass


def _progress_bar(total: int, initial: int, disable: bool) -> Any:
    try:
        from tqdm.auto import tqdm
    except ImportError:
        bar = _NoBar(total, initial)
        if disable:
            bar.update = lambda n=1: None  # type: ignore[method-assign]
        return bar
    return tqdm(total=total, initial=initial, desc="runs", unit="run", disable=disable, file=sys.stderr)


# ---------------------------------------------------------------------------------------------------------- the grid
@dataclasses.dataclass
class GridSummary:
    """What :func:`run_grid` did: the ids of the runs skipped (already finished), finished now and failed."""

    out: Path
    total: int
    skipped: list[str]
    finished: list[str]
    failed: dict[str, str]  # run id -> traceback
    rows: list[dict[str, Any]]
    diverged: dict[str, str] = dataclasses.field(default_factory=dict)  # run id -> reason (this grid's runs)

    @property
    def ok(self) -> bool:
        return not self.failed

    def format(self) -> str:
        lines = [
            f"{self.total} runs in {self.out}: {len(self.skipped)} already finished, {len(self.finished)} finished now, "
            f"{len(self.failed)} failed, {len(self.diverged)} diverged; {len(self.rows)} rows in "
            f"{self.out / 'results.csv'} (every finished run of the folder; diverged runs are left out)"
        ]
        for run_id, reason in self.diverged.items():
            lines.append(f"DIVERGED {run_id}: {reason}")
        for run_id, tb in self.failed.items():
            lines.append(f"FAILED {run_id}:")
            lines.extend("    " + line for line in tb.rstrip().splitlines())
        return "\n".join(lines)


def run_grid(
    envs: Iterable[str | tuple[str, Mapping[str, Any]]],
    methods: Iterable[str],
    seeds: Iterable[int],
    out: str | os.PathLike,
    budget: int | str | None = None,
    learning_starts: int = 5_000,
    eval_every: int = 5_000,
    eval_schedule: str = "every",
    n_envs: int = 20,
    eval_episodes: int = 10,
    splits: Sequence[str] = SPLIT_ORDER,
    policy_kwargs: Mapping[str, Any] | None = None,
    hyperparams: Mapping[str, Any] | None = None,
    workers: int = 1,
    backend: str = "local",
    address: str | None = None,
    retry_failed: bool = True,
    progress: bool = True,
    command: str | None = None,
    save_models: bool = False,
    checkpoints: bool = True,
    invert_at: int | None = None,
) -> GridSummary:
    """Run (or resume) the grid envs x methods x seeds and write the results table into ``out``.

    Runs start seed by seed (all methods of seed 0 on an env, then seed 1...), so that a study stopped early holds
    comparable seeds of every method. One driver per folder: a second one is refused while the first runs.

    :param envs: AIB ids (``"AIB-ODE-v0:k=5"`` for env kwargs).
    :param methods: ``DMASHSAC`` methods (``dmash``, ``dma_star``, ``dma``, ``dma_pearl``, ``concat``,
        ``decision_adapter``, ``dr``), ``"sac"`` (SB3's SAC) or ``"recurrent_ppo"`` (sb3-contrib's RecurrentPPO).
    :param seeds: run seeds.
    :param out: output folder (created; reused to resume).
    :param budget: learning vector steps (``None``/``"paper"``: each env's paper budget).
    :param learning_starts: vector steps of random actions first (the paper's 5,000).
    :param eval_every: vector steps between evaluations (the paper's 5,000).
    :param eval_schedule: ``"every"`` or ``"final2"`` (only the two evaluations the score needs).
    :param n_envs: training sub-envs (the paper's 20).
    :param eval_episodes: scored episodes per context (the protocol's 10).
    :param splits: evaluated splits.
    :param policy_kwargs: policy kwargs of every run (e.g. ``{"net_arch": [16]}`` for smoke runs).
    :param hyperparams: further algorithm kwargs of every run (``batch_size``...).
    :param workers: parallel runs (local processes, or the CPUs of a local Ray); each uses one torch thread.
    :param backend: ``"local"`` (a process pool; in this process when ``workers == 1``) or ``"ray"``.
    :param address: Ray address (``"auto"``, ``"ray://host:10001"``); ``None`` starts a local Ray.
    :param retry_failed: rerun the runs that crashed in an earlier invocation.
    :param progress: show a tqdm progress bar of the runs and, for each run, a line with its learning steps, ETA and
        latest AERs after every evaluation and every 2 minutes (stderr).
    :param command: the command line recorded in ``grid.json`` (default: ``sys.argv``).
    :param save_models: save each model trained by this invocation as ``<out>/models/<run_id>.zip`` (for
        ``sb3-dmash diagnose`` or ``rl_zoo3.enjoy``). Runs finished before are not retrained for it. With Ray on a
        cluster, ``out`` must be on a file system that the workers share.
    :param checkpoints: snapshot each run after every evaluation in ``<out>/checkpoints/<run_id>/`` and resume an
        interrupted run from there, exactly (removed when the run has finished). With Ray on a cluster they need a
        shared file system too.
    :param invert_at: evaluate with the fault protocol: the actions are inverted from this step of each scored episode
        on (``aib.evaluate(..., invert_at=t)``); the table then has the returns before and after the fault, the recovery
        time and the reward trace around the fault. Runs with a fault are other runs (other ids) than without.
    :return: a :class:`GridSummary`; ``summary.ok`` is False when a run crashed.
    :raises KeyboardInterrupt: after printing how many runs have finished and how to resume.
    """
    if backend not in ("local", "ray"):
        raise ValueError(f"backend={backend!r} is not allowed; expected 'local' or 'ray'")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers={workers!r} must be an integer >= 1")
    validate_settings(
        methods := list(methods),
        budget=budget,
        learning_starts=learning_starts,
        eval_every=eval_every,
        eval_schedule=eval_schedule,
        n_envs=n_envs,
        eval_episodes=eval_episodes,
        splits=splits,
        policy_kwargs=policy_kwargs,
        hyperparams=hyperparams,
        envs=(envs := list(envs)),
    )
    if invert_at is not None:
        _check_fault_step(invert_at, envs)
    specs = make_grid(
        envs,
        methods,
        seeds,
        budget,
        learning_starts=int(learning_starts),
        eval_every=int(eval_every),
        eval_schedule=eval_schedule,
        n_envs=int(n_envs),
        eval_episodes=int(eval_episodes),
        splits=tuple(splits),
        policy_kwargs=dict(policy_kwargs or {}),
        hyperparams=dict(hyperparams or {}),
        invert_at=invert_at,
    )
    out = Path(out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    with FolderLock(out):
        return _run_locked_grid(
            specs, out, workers, backend, address, retry_failed, progress, command, save_models, checkpoints
        )


def _run_locked_grid(
    specs: list[RunSpec],
    out: Path,
    workers: int,
    backend: str,
    address: str | None,
    retry_failed: bool,
    progress: bool,
    command: str | None,
    save_models: bool,
    checkpoints: bool,
) -> GridSummary:
    check_same_settings(out, specs, "Give this grid another --out.")
    meta = {
        **run_metadata(),
        "command": command if command is not None else " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]]),
        "backend": backend,
        "workers": workers,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "budget_unit": "vector steps",
    }
    atomic_write_text(
        out / "grid.json",
        json.dumps({"meta": meta, "runs": [{"run_id": s.run_id, **s.to_dict()} for s in specs]}, indent=1) + "\n",
    )
    finished_before = {s.run_id: load_run(out, s) for s in specs}
    skipped = [run_id for run_id, payload in finished_before.items() if payload is not None]
    diverged = {
        run_id: payload.get("reason", "")
        for run_id, payload in finished_before.items()
        if payload is not None and payload["status"] == "diverged"
    }
    failed_before = {s.run_id for s in specs if s.run_id not in skipped and load_error(out, s) is not None}
    pending = [s for s in specs if s.run_id not in skipped and (retry_failed or s.run_id not in failed_before)]
    # Seed by seed within each env, so that an early stop leaves every method with the same seeds
    env_rank = {env: i for i, env in enumerate(dict.fromkeys(s.env for s in specs))}
    pending.sort(key=lambda s: (env_rank[s.env], s.seed))
    model_dir = str(out.resolve() / "models") if save_models else None
    checkpoint_dir = str(out.resolve() / "checkpoints") if checkpoints else None
    failed: dict[str, str] = {}
    for spec in specs:
        if spec.run_id in failed_before and spec not in pending:
            failed[spec.run_id] = (load_error(out, spec) or {}).get("traceback", "")
    finished: list[str] = []
    bar = _progress_bar(total=len(specs), initial=len(skipped), disable=not progress)

    def on_payload(payload: dict[str, Any]) -> None:
        write_payload(out, payload)
        run_id = payload["run_id"]
        if payload["status"] in FINISHED_STATUSES:
            finished.append(run_id)
            failed.pop(run_id, None)
            write_tables(out, collect_rows(out))
            if checkpoint_dir is not None:  # the results are stored: the snapshots are no longer needed
                from sb3_dmash.experiments.run_checkpoint import RunCheckpoint

                RunCheckpoint(Path(checkpoint_dir) / run_id).remove()
            if payload["status"] == "diverged":
                diverged[run_id] = payload.get("reason", "")
                bar.write(f"run {run_id} DIVERGED: {payload.get('reason')}", file=sys.stderr)
        else:
            failed[run_id] = payload.get("traceback", payload.get("error", ""))
            bar.write(f"run {run_id} FAILED: {payload.get('error')}", file=sys.stderr)
        bar.update(1)

    try:
        if pending:
            if backend == "ray":
                _run_ray(pending, workers, address, on_payload, model_dir, checkpoint_dir, progress)
            else:
                _run_local(pending, workers, on_payload, bar, model_dir, checkpoint_dir, progress)
    except KeyboardInterrupt:
        bar.close()
        done = sum(load_run(out, s) is not None for s in specs)
        print(
            f"\ninterrupted: {done} of {len(specs)} runs finished in {out}; run the same command again to resume"
            + (" (runs in progress continue from their last evaluation)" if checkpoints else ""),
            file=sys.stderr,
            flush=True,
        )
        raise
    finally:
        bar.close()
    rows = collect_rows(out)
    write_tables(out, rows)
    return GridSummary(out, len(specs), skipped, finished, failed, rows, diverged)


class FolderInUseError(RuntimeError):
    """Another driver is running a grid in this output folder."""


class FolderLock:
    """Exclusive use of a bench output folder by one driver (``<out>/.lock``, an OS lock released when the process
    ends, however it ends). A second driver is refused with the first one's pid, host, start time and command."""

    def __init__(self, out: str | os.PathLike) -> None:
        self.path = Path(out) / ".lock"
        self._fd: int | None = None

    def __enter__(self) -> FolderLock:
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "unknown"
            os.close(fd)
            raise FolderInUseError(
                f"{self.path.parent} is in use by another sb3-dmash bench driver ({holder}); two drivers on one folder "
                "would train the same runs twice. Wait for it to finish (or stop it), or pass another --out."
            ) from None
        info = f"pid {os.getpid()} on {platform.node()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}: " + " ".join(
            [os.path.basename(sys.argv[0]), *sys.argv[1:]]
        )
        os.ftruncate(fd, 0)
        os.pwrite(fd, info.encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # releases the lock
            self._fd = None


def evaluate_faults(
    study: str | os.PathLike,
    out: str | os.PathLike,
    invert_at: int,
    n_episodes: int | None = None,
    splits: Sequence[str] | None = None,
    envs: Iterable[str] | None = None,
    methods: Iterable[str] | None = None,
    progress: bool = True,
) -> GridSummary:
    """Evaluate the saved models of a finished study with the fault protocol, without training again.

    For every run of ``study`` that finished with status ``ok`` and has ``models/<run_id>.zip`` (``--save-models``),
    :func:`aib.evaluate` with ``invert_at`` on the run's splits, episodes and evaluation seed; the result is stored in
    ``out`` as a run of its own (its spec is the trained run's with ``invert_at`` set and ``eval_episodes``, and its one
    evaluation is at the trained run's final step), so ``sb3-dmash report OUT`` gives the fault table and plots.
    Finished evaluations are not redone.

    :param study: a bench folder run with ``--save-models``.
    :param out: the folder of the fault evaluations (another folder than ``study``).
    :param invert_at: the step of each scored episode from which the actions are inverted.
    :param n_episodes: scored episodes per context (default: the study's).
    :param splits: evaluated splits (default: the study's).
    :param envs: only these env keys (default: all); ``methods``: only these methods.
    :param progress: one line per evaluated model on stderr.
    """
    import aib

    study, out = Path(study), Path(out)
    if study.resolve() == out.resolve():
        raise ValueError("out must be another folder than the study: a fault evaluation is not a training run")
    payloads = [p for p in finished_runs(study) if p["status"] == "ok"]
    envs = set(envs) if envs is not None else None
    methods = set(methods) if methods is not None else None
    (out / "runs").mkdir(parents=True, exist_ok=True)
    skipped: list[str] = []
    finished: list[str] = []
    missing: list[str] = []
    _limit_threads()
    with FolderLock(out):
        todo = []  # (trained run, its spec, the fault evaluation's spec, the model)
        for payload in payloads:
            spec = RunSpec.from_dict(payload["spec"])
            if (envs is not None and spec.env not in envs) or (methods is not None and spec.method not in methods):
                continue
            model_path = study / "models" / f"{spec.run_id}.zip"
            if not model_path.exists():
                missing.append(spec.run_id)
                continue
            fault_spec = dataclasses.replace(
                spec,
                invert_at=invert_at,
                eval_episodes=n_episodes or spec.eval_episodes,
                splits=tuple(splits) if splits is not None else spec.splits,
            )
            todo.append((payload, spec, fault_spec, model_path))
        check_same_settings(
            out, [fault_spec for _, _, fault_spec, _ in todo], "Evaluate into another --out, or choose with --envs/--methods."
        )
        for payload, spec, fault_spec, model_path in todo:
            if load_run(out, fault_spec) is not None:
                skipped.append(fault_spec.run_id)
                continue
            _check_fault_step(invert_at, [spec.env_id])
            start = time.time()
            model = _algorithm_class(spec).load(model_path, device="cpu")
            results = aib.evaluate(
                model,
                spec.env_id,
                splits=fault_spec.splits,
                n_episodes=fault_spec.eval_episodes,
                eval_seed=1_000_000 + spec.seed,
                env_kwargs=_env_kwargs(spec),
                invert_at=invert_at,
                progress=False,
            )
            final = max(r["step"] for r in payload["records"])
            final_record = next(r for r in payload["records"] if r["step"] == final)
            records = [
                {
                    "split": split,
                    "step": final,
                    "vector_step": final_record["vector_step"],
                    "timesteps": final_record["timesteps"],
                    **result.to_record(),
                }
                for split, result in results.items()
            ]
            fault_payload = {
                "run_id": fault_spec.run_id,
                "spec": fault_spec.to_dict(),
                "meta": {**run_metadata(), "model": str(model_path), "trained_run": spec.run_id},
                "status": "ok",
                "records": records,
                "duration_s": time.time() - start,
                "pid": os.getpid(),
            }
            write_payload(out, fault_payload)
            finished.append(fault_spec.run_id)
            if progress:
                after = ", ".join(f"{r['split']} {r['return_after']:.1f}" for r in records)
                _write_line(f"[{spec.env} {spec.method} seed {spec.seed}] return after the fault: {after}")
        rows = collect_rows(out)
        write_tables(out, rows)
    if missing:
        _write_line(f"{len(missing)} finished run(s) of {study} have no saved model (run the study with --save-models)")
    return GridSummary(out, len(skipped) + len(finished), skipped, finished, {}, rows)


def load_results(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a results table: a bench folder, a ``results.jsonl`` or a ``results.csv``."""
    import csv

    path = Path(path)
    if path.is_dir():
        path = path / "results.jsonl" if (path / "results.jsonl").exists() else path / "results.csv"
    if path.suffix == ".jsonl":
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    rows = []
    with open(path, encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            out: dict[str, Any] = {k: (None if v == "" else v) for k, v in row.items()}
            for key in ("per_context", "env_kwargs", "reward_trace"):
                if row.get(key):
                    out[key] = json.loads(row[key])
            for key in ("seed", "step", "vector_step", "timesteps", "n_episodes", "budget", "learning_starts"):
                if row.get(key) not in (None, ""):
                    out[key] = int(row[key])
            for key in ("eval_every", "n_envs", "invert_at", "reward_trace_start"):
                if row.get(key) not in (None, ""):
                    out[key] = int(row[key])
            for key in (
                "aer",
                "mean_reward",
                "duration_s",
                "return_before",
                "return_after",
                "recovery_median",
                "recovery_censored",
            ):
                if row.get(key) not in (None, ""):
                    out[key] = float(row[key])
            if row.get("recovery_undefined") not in (None, ""):
                out["recovery_undefined"] = float(row["recovery_undefined"])
            rows.append(out)
    return rows
