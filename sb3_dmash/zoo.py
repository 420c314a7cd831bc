"""rl-zoo3 integration: ``python -m rl_zoo3.train --algo dmash_sac --env AIB-<Name>-v0`` on an unmodified rl-zoo3.

rl-zoo3 has no plugin API. The startup hook (``_sb3_dmash_hook``, installed with the package) calls the three
``patch_*`` functions below right after the rl-zoo3 module they patch has been imported:

* :func:`patch_utils` (``rl_zoo3.utils``): ``ALGOS["dmash_sac"] = DMASHSAC``, so ``--algo dmash_sac`` is a valid
  choice of ``train``, ``enjoy``, ``record_video``...;
* :func:`patch_hyperparams_opt` (``rl_zoo3.hyperparams_opt``): the Optuna sampler and converter of ``dmash_sac``;
* :func:`patch_exp_manager` (``rl_zoo3.exp_manager``): the default hyperparameter file. Without ``--conf-file``,
  ``--algo dmash_sac`` reads our ``dmash_sac.yml``, ``--algo sac`` on an ``AIB-`` id our ``sac.yml`` (the DR / Concat
  baselines with the same budgets) and ``--algo ppo_lstm`` on an ``AIB-`` id our ``ppo_lstm.yml`` (sb3-contrib's
  RecurrentPPO with the same budgets in environment steps); every other ``--algo``/``--env`` keeps rl-zoo3's own
  file. It also keeps the yml's ``policy_kwargs`` when Optuna samples some of them, and makes ``--trial-id 0`` work
  for ``dmash_sac``.

Every patch is idempotent and uses ``setdefault`` where it adds to a table, so user changes win. Without the hook
(``SB3_DMASH_NO_HOOK=1``, ``python -S``, an unusual install), call :func:`install` in your script or use the wrapper
command ``python -m sb3_dmash.zoo train|enjoy|record_video|record_training ...``.

Nothing here imports rl-zoo3, torch or optuna at module level: the hook imports this module while rl-zoo3 imports.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.resources
import inspect
import io
import numbers
import runpy
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ALGO = "dmash_sac"
# the --algo values whose yml we ship: dmash_sac always; sac (the DR / Concat baselines) and ppo_lstm (RecurrentPPO)
# only for AIB ids, where rl-zoo3's own files have no entry
_CONFIG_FILES = {"dmash_sac": "dmash_sac.yml", "sac": "sac.yml", "ppo_lstm": "ppo_lstm.yml"}
AIB_PREFIX = "AIB-"

# Optuna search space (docs/zoo.md)
NET_ARCH = {"small": [64, 64], "medium": [256, 256], "big": [400, 300]}
HISTORY_LENS = (16, 24, 64, 128)
CONTEXT_DIMS = (4, 8, 16)
HYPERNET_HIDDEN = (32, 64, 128)
BATCH_SIZE_POWS = (6, 7, 8, 9)  # 64 ... 512 (raised to n_envs when smaller: the batch is stratified over sub-envs)

COMMANDS = ("train", "enjoy", "record_video", "record_training")
_PATCHED = "_sb3_dmash_patched"

# Hyperparameters of the experiment whose Optuna objective runs in this thread (set by the patched objective).
_objective_state = threading.local()


# ---------------------------------------------------------------------------------------------------------------------
# hyperparameter files
# ---------------------------------------------------------------------------------------------------------------------
def hyperparams_file(name: str = "dmash_sac.yml") -> Path:
    """The path of one of our rl-zoo3 hyperparameter files (``dmash_sac.yml``, ``sac.yml``, ``ppo_lstm.yml``).

    Rule: the copy inside the installed package (``sb3_dmash/hyperparams/``, where the wheel puts the repository's
    top-level ``hyperparams/``), else the source tree's ``hyperparams/`` next to the package directory (an editable
    install or a source checkout on ``sys.path``, where ``sb3_dmash`` is the repository's own directory).

    :param name: the file name.
    """
    packaged = importlib.resources.files("sb3_dmash") / "hyperparams" / name
    if packaged.is_file():
        return Path(str(packaged))
    package_dir = Path(importlib.import_module("sb3_dmash").__file__).resolve().parent  # type: ignore[arg-type]
    source = package_dir.parent / "hyperparams" / name
    if source.is_file():
        return source
    raise FileNotFoundError(f"sb3-dmash hyperparameter file {name!r} not found (looked at {packaged} and {source})")


def default_config(algo: str, env_id: str) -> str | None:
    """The hyperparameter file rl-zoo3 should read for ``--algo algo --env env_id`` when no ``--conf-file`` is given.

    ``dmash_sac``: our ``dmash_sac.yml``. ``sac`` or ``ppo_lstm`` on an ``AIB-`` id: our ``sac.yml`` or
    ``ppo_lstm.yml``. Anything else: ``None`` (rl-zoo3's own file).

    :param algo: the ``--algo``.
    :param env_id: the ``--env``.
    """
    if algo == ALGO or (algo in _CONFIG_FILES and str(env_id).startswith(AIB_PREFIX)):
        return str(hyperparams_file(_CONFIG_FILES[algo]))
    return None


# ---------------------------------------------------------------------------------------------------------------------
# Optuna sampler and converter
# ---------------------------------------------------------------------------------------------------------------------
def _policy_keys() -> set[str]:
    """Keyword arguments of :class:`~sb3_dmash.dmash.policies.DMASHPolicy` that a study may hold."""
    from sb3_dmash.dmash.policies import DMASHPolicy

    excluded = {"self", "observation_space", "action_space", "lr_schedule", "history_len"}
    return {
        name
        for name, p in inspect.signature(DMASHPolicy.__init__).parameters.items()
        if name not in excluded and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }


def _method_settings(method: str) -> dict[str, Any]:
    try:
        from sb3_dmash.dmash.presets import METHODS
    except ImportError:  # an older version without presets: everything is DMA*-SH
        return {"context_source": "inferred", "rl_merge": "hypernet_shared", "fm_merge": "hypernet"}
    return dict(METHODS.get(method, METHODS.get("dmash", {})))


def convert_dmash_sac_params(params: dict[str, Any]) -> dict[str, Any]:
    """Map the parameters an Optuna trial stored (``trial.params``) to ``DMASHSAC`` keyword arguments.

    ``one_minus_gamma`` -> ``gamma``; ``batch_size_pow`` -> ``batch_size``; ``net_arch`` names -> lists and
    ``hypernet_hidden`` -> ``hypernet_arch=[h, h]`` in ``policy_kwargs``, with every other ``DMASHPolicy`` argument
    (``context_dim``, ``input_mask_prob``...); ``train_freq=1``, ``gradient_steps=1``; anything else (``history_len``,
    ``learning_rate``, ``critic_learning_rate``, ``tau``, unknown DMASHSAC kwargs) passes through. rl-zoo3 uses it for
    ``--trial-id``; the yml's other ``policy_kwargs`` are merged back by the patched ``ExperimentManager``.
    """
    hyperparams = dict(params)
    policy_kwargs: dict[str, Any] = {}
    if "one_minus_gamma" in hyperparams:
        hyperparams["gamma"] = 1 - hyperparams.pop("one_minus_gamma")
    if "batch_size_pow" in hyperparams:
        hyperparams["batch_size"] = 2 ** int(hyperparams.pop("batch_size_pow"))
    if "net_arch" in hyperparams:
        net_arch = hyperparams.pop("net_arch")
        policy_kwargs["net_arch"] = list(NET_ARCH[net_arch]) if isinstance(net_arch, str) else net_arch
    if "hypernet_hidden" in hyperparams:
        hidden = int(hyperparams.pop("hypernet_hidden"))
        policy_kwargs["hypernet_arch"] = [hidden, hidden]
    for key in sorted(_policy_keys() & set(hyperparams)):
        policy_kwargs[key] = hyperparams.pop(key)
    hyperparams["train_freq"] = 1
    hyperparams["gradient_steps"] = 1
    if policy_kwargs:
        hyperparams["policy_kwargs"] = policy_kwargs
    return hyperparams


def _as_dict(policy_kwargs: Any) -> dict[str, Any]:
    """A yml ``policy_kwargs`` value (``None``, a dict or a string like ``"dict(net_arch=[64])"``) as a dict."""
    if policy_kwargs is None:
        return {}
    if isinstance(policy_kwargs, str):
        # rl-zoo3 evaluates these strings in its exp_manager namespace (nn, th, SB3 names): do the same
        namespace = vars(importlib.import_module("rl_zoo3.exp_manager"))
        policy_kwargs = eval(policy_kwargs, dict(namespace))
    return dict(policy_kwargs)


def sample_dmash_sac_params(trial: Any, n_actions: int, n_envs: int, additional_args: dict[str, Any]) -> dict[str, Any]:
    """Optuna sampler of ``dmash_sac`` (rl-zoo3's ``HYPERPARAMS_SAMPLER`` signature).

    The SAC part as rl-zoo3's SAC sampler (``one_minus_gamma``, ``learning_rate``, ``tau``, ``net_arch``) plus
    ``critic_learning_rate``; ``train_freq=1`` and ``gradient_steps=1`` stay fixed (one update round per vector step);
    ``batch_size`` in {64 ... 512}, raised to ``n_envs`` when smaller (the batch is stratified over sub-envs). For the
    methods that infer a context (DMA*-SH, DMA*, DMA, DMA-Pearl; the yml's ``method``) also ``input_mask_prob`` in
    [0, 0.6], ``history_len`` in {16, 24, 64, 128} and ``context_dim`` in {4, 8, 16}; for those with a hypernetwork
    (DMA*-SH, Decision Adapter) its hidden width in {32, 64, 128} (``hypernet_arch=[h, h]``).

    rl-zoo3 replaces the yml's ``policy_kwargs`` with the sampled dict; this sampler re-emits the yml's other
    ``policy_kwargs`` (read from the experiment whose objective calls it, see :func:`patch_exp_manager`), so only the
    sampled keys change. Every other yml key (``method``, ``ent_coef``, ``buffer_size``...) is kept by rl-zoo3 itself.
    """
    base = dict(getattr(_objective_state, "hyperparams", None) or {})
    method = base.get("method") or "dmash"
    settings = _method_settings(method)
    params: dict[str, Any] = {
        "one_minus_gamma": trial.suggest_float("one_minus_gamma", 0.0001, 0.03, log=True),
        "learning_rate": trial.suggest_float("learning_rate", 1e-5, 0.002, log=True),
        "critic_learning_rate": trial.suggest_float("critic_learning_rate", 1e-5, 0.002, log=True),
        "tau": trial.suggest_float("tau", 0.001, 0.08, log=True),
        "batch_size_pow": trial.suggest_categorical("batch_size_pow", list(BATCH_SIZE_POWS)),
        "net_arch": trial.suggest_categorical("net_arch", list(NET_ARCH)),
    }
    from sb3_dmash.dmash.routing import ContextRouting

    routing = ContextRouting.from_settings(settings)
    if routing.infers_context:
        params["input_mask_prob"] = trial.suggest_float("input_mask_prob", 0.0, 0.6)
        params["history_len"] = trial.suggest_categorical("history_len", list(HISTORY_LENS))
        params["context_dim"] = trial.suggest_categorical("context_dim", list(CONTEXT_DIMS))
    if routing.adapts_rl_networks or routing.has_context_hypernet:
        params["hypernet_hidden"] = trial.suggest_categorical("hypernet_hidden", list(HYPERNET_HIDDEN))

    hyperparams = convert_dmash_sac_params(params)
    hyperparams["batch_size"] = max(hyperparams["batch_size"], n_envs)
    # keep the yml's (and -params') other policy kwargs: the sampled keys win
    hyperparams["policy_kwargs"] = {**_as_dict(base.get("policy_kwargs")), **hyperparams.get("policy_kwargs", {})}
    if base.get("input_mask_prob") is not None and "input_mask_prob" in hyperparams["policy_kwargs"]:
        hyperparams["input_mask_prob"] = None  # the ablation switch would contradict the sampled policy kwarg
    trial.set_user_attr("gamma", hyperparams["gamma"])
    trial.set_user_attr("batch_size", hyperparams["batch_size"])
    trial.set_user_attr("policy_kwargs", repr(hyperparams["policy_kwargs"]))
    return hyperparams


# ---------------------------------------------------------------------------------------------------------------------
# the patches
# ---------------------------------------------------------------------------------------------------------------------
def patch_utils() -> None:
    """``rl_zoo3.utils.ALGOS.setdefault("dmash_sac", DMASHSAC)`` (in place: every rl-zoo3 script sees it)."""
    from sb3_dmash.dmash.dmash_sac import DMASHSAC

    importlib.import_module("rl_zoo3.utils").ALGOS.setdefault(ALGO, DMASHSAC)


def patch_hyperparams_opt() -> None:
    """Register the Optuna sampler and converter of ``dmash_sac`` (``setdefault``: a user's own entries win)."""
    module = importlib.import_module("rl_zoo3.hyperparams_opt")
    module.HYPERPARAMS_SAMPLER.setdefault(ALGO, sample_dmash_sac_params)
    module.HYPERPARAMS_CONVERTER.setdefault(ALGO, convert_dmash_sac_params)


def _wrap(cls: type, name: str, make: Any) -> None:
    original = getattr(cls, name)
    if getattr(original, _PATCHED, False):
        return
    wrapper = functools.wraps(original)(make(original))
    setattr(wrapper, _PATCHED, True)
    setattr(cls, name, wrapper)


def _make_init(original: Any) -> Any:
    signature = inspect.signature(original)

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        bound = signature.bind(self, *args, **kwargs)
        if not bound.arguments.get("config"):
            config = default_config(str(bound.arguments.get("algo")), str(bound.arguments.get("env_id")))
            if config is not None:
                bound.arguments["config"] = config
        original(*bound.args, **bound.kwargs)

    return __init__


def _make_objective(original: Any) -> Any:
    def objective(self: Any, trial: Any) -> float:
        if self.algo != ALGO:
            return original(self, trial)
        previous = getattr(_objective_state, "hyperparams", None)
        _objective_state.hyperparams = self._hyperparams
        try:
            return original(self, trial)
        finally:
            _objective_state.hyperparams = previous

    return objective


def check_hyperparams(hyperparams: Mapping[str, Any], algo: str, env_id: str, config: str | None) -> None:
    """Reject hyperparameters that rl-zoo3 would otherwise fail on later with an unrelated error.

    * ``n_envs`` must be an integer >= 1 (0 fails inside SB3's ``make_vec_env`` with an IndexError);
    * ``--algo dmash_sac`` on a non-AIB id without ``--conf-file``: rl-zoo3 falls back to our yml's ``default`` entry,
      whose ``env_kwargs: {split: train}`` and ``vec_env_wrapper: aib.AssignContexts`` only fit AIB environments.

    :param hyperparams: the entry rl-zoo3 read (after ``-params`` and ``--trial-id``).
    :param algo: the ``--algo``.
    :param env_id: the ``--env``.
    :param config: the hyperparameter file rl-zoo3 read.
    """
    n_envs = hyperparams.get("n_envs", 1)
    if isinstance(n_envs, bool) or not isinstance(n_envs, numbers.Integral) or n_envs < 1:
        raise ValueError(f"n_envs must be an integer >= 1, got {n_envs!r} (the n_envs hyperparameter of {algo} on {env_id})")
    if algo != ALGO or str(env_id).startswith(AIB_PREFIX) or config is None:
        return
    if Path(config).resolve() != hyperparams_file(_CONFIG_FILES[ALGO]).resolve():
        return
    env_kwargs = hyperparams.get("env_kwargs")
    aib_split = isinstance(env_kwargs, Mapping) and "split" in env_kwargs
    # only while an AIB-only key is still set: -params can override both
    if "AssignContexts" in str(hyperparams.get("vec_env_wrapper")) or aib_split:
        raise ValueError(
            f"--env {env_id}: the zoo's default dmash_sac entry is for AIB environments (AIB-*-v0); give hyperparameters "
            f"for {env_id} with --conf-file (a yml with an entry for {env_id}), or -params vec_env_wrapper:None "
            'env_kwargs:"dict()" (and your own n_timesteps, buffer_size...)'
        )


def _make_read_hyperparameters(original: Any) -> Any:
    def read_hyperparameters(self: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        hyperparams, saved = _read_hyperparameters(self, original)
        check_hyperparams(hyperparams, str(self.algo), str(self.env_name.gym_id), self.config)
        return hyperparams, saved

    return read_hyperparameters


def _read_hyperparameters(self: Any, original: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """rl-zoo3's ``read_hyperparameters``; for ``dmash_sac`` with ``--trial-id``, keeps the yml's ``policy_kwargs``."""
    trial_id = self.trial_id
    if self.algo != ALGO or not (self.storage and self.study_name) or trial_id is None:
        return original(self)
    # Loading a trial (--storage --study-name --trial-id). rl-zoo3 would replace the yml's policy_kwargs with the
    # trial's and skip trial 0 (its test is `if self.trial_id:`). Instead: read the yml entry alone, merge its
    # policy_kwargs (or those of -params) under the trial's, and hand the trial to rl-zoo3 as if it were -params
    # given before the user's own (rl-zoo3's order: yml < trial < -params).
    saved_custom = self.custom_hyperparams
    custom = dict(saved_custom or {})
    try:
        self.trial_id, self.custom_hyperparams = None, None
        with contextlib.redirect_stdout(io.StringIO()):
            base, _ = original(self)
        print(f"Loading trial {trial_id} of the Optuna study {self.study_name!r}...")
        study_params = self.load_trial(self.storage, self.study_name, trial_id)
        if "policy_kwargs" in study_params:
            base_policy_kwargs = custom.pop("policy_kwargs") if "policy_kwargs" in custom else base.get("policy_kwargs")
            study_params["policy_kwargs"] = {**_as_dict(base_policy_kwargs), **study_params["policy_kwargs"]}
        self.custom_hyperparams = {**study_params, **custom}
        return original(self)
    finally:
        self.trial_id, self.custom_hyperparams = trial_id, saved_custom


def patch_exp_manager() -> None:
    """Patch ``rl_zoo3.exp_manager.ExperimentManager`` (idempotent).

    * ``__init__``: without ``--conf-file`` (``config=None``), ``dmash_sac`` reads our ``dmash_sac.yml``, and ``sac``
      and ``ppo_lstm`` on an ``AIB-`` id our ``sac.yml`` and ``ppo_lstm.yml`` (:func:`default_config`); everything else
      is unchanged.
    * ``objective``: makes the experiment's hyperparameters visible to :func:`sample_dmash_sac_params` (thread-local,
      so ``--n-jobs`` works), which re-emits the yml's ``policy_kwargs``.
    * ``read_hyperparameters``: for ``dmash_sac`` with ``--trial-id``, keeps the yml's ``policy_kwargs`` under the
      trial's and loads trial 0 too.
    """
    manager = importlib.import_module("rl_zoo3.exp_manager").ExperimentManager
    _wrap(manager, "__init__", _make_init)
    _wrap(manager, "objective", _make_objective)
    _wrap(manager, "read_hyperparameters", _make_read_hyperparameters)


def install() -> None:
    """Apply every rl-zoo3 patch and register the AIB ids now (for scripts; the startup hook does it lazily).

    Imports rl-zoo3 (and so torch and optuna). Idempotent.
    """
    import aib  # noqa: F401  (registers the AIB ids)

    patch_utils()
    patch_hyperparams_opt()
    patch_exp_manager()


# ---------------------------------------------------------------------------------------------------------------------
# wrapper CLI
# ---------------------------------------------------------------------------------------------------------------------
USAGE = f"""usage: python -m sb3_dmash.zoo {{{",".join(COMMANDS)}}} [rl-zoo3 arguments]

Runs `python -m rl_zoo3.<command>` after sb3_dmash.zoo.install(): use it where the startup hook is not active.
Example: python -m sb3_dmash.zoo train --algo dmash_sac --env AIB-DI-v0 --num-threads 1"""


def main(argv: list[str] | None = None) -> int:
    """``python -m sb3_dmash.zoo <command> [args]``: the rl-zoo3 command with the patches installed."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"sb3_dmash.zoo: unknown command {command!r}\n{USAGE}", file=sys.stderr)
        return 2
    install()
    module = f"rl_zoo3.{command}"
    saved = sys.argv
    sys.argv = [module, *rest]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    finally:
        sys.argv = saved
    return 0


if __name__ == "__main__":
    # Run the imported module's main(), not this __main__ copy's: the patches, the sampler and the objective wrapper
    # must all come from `sb3_dmash.zoo` (the module the startup hook uses), so that they share one state.
    from sb3_dmash.zoo import main as _main

    sys.exit(_main())
