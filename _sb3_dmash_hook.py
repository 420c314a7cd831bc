"""Startup hook of sb3-dmash: runs small registration callbacks right after chosen modules finish importing.

Loaded at interpreter start by ``sb3_dmash_hook.pth`` (and ``sb3_dmash_hook.start``, PEP 829), it makes

* ``gym.make("AIB-Cheetah-v0")`` work without ``import aib`` (the AIB ids register when ``gymnasium.envs`` loads);
* ``python -m rl_zoo3.train --algo dmash_sac ...`` work on an unmodified rl-zoo3 (``sb3_dmash.zoo`` patches rl-zoo3's
  algorithm, sampler and hyperparameter tables when their modules load).

Rules: standard library only; nothing is imported at startup; idempotent; a failing callback only warns, it never
breaks the interpreter; ``SB3_DMASH_NO_HOOK=1`` switches it off.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings

# module that finishes importing -> (module, function) to call then
TARGETS: dict[str, tuple[str, str]] = {
    "gymnasium.envs": ("aib.registration", "register_envs"),
    "rl_zoo3.utils": ("sb3_dmash.zoo", "patch_utils"),
    "rl_zoo3.hyperparams_opt": ("sb3_dmash.zoo", "patch_hyperparams_opt"),
    "rl_zoo3.exp_manager": ("sb3_dmash.zoo", "patch_exp_manager"),
}
DISABLE_VARIABLE = "SB3_DMASH_NO_HOOK"
_done: set[str] = set()


def _run(name: str) -> None:
    if name in _done:
        return
    _done.add(name)
    module_name, function = TARGETS[name]
    try:
        getattr(importlib.import_module(module_name), function)()
    except Exception as exc:  # the hook must never break an import
        warnings.warn(
            f"sb3-dmash startup hook: {module_name}.{function}() failed after importing {name}: {exc!r}. "
            f"Set {DISABLE_VARIABLE}=1 to switch the hook off.",
            RuntimeWarning,
            stacklevel=2,
        )


class _LoaderProxy:
    """Delegates everything to the real loader and runs the callback after the module has executed."""

    def __init__(self, loader, name: str) -> None:
        self._loader = loader
        self._name = name

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        _run(self._name)

    def __getattr__(self, attr: str):
        return getattr(self._loader, attr)


class _PostImportFinder:
    """A meta-path finder that wraps the loaders of the target modules; it never finds anything itself."""

    def __init__(self) -> None:
        self._searching: set[str] = set()

    def find_spec(self, name, path=None, target=None):
        if name not in TARGETS or name in _done or name in self._searching:
            return None
        self._searching.add(name)
        try:
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(name, path, target)
                if spec is not None:
                    break
            else:
                return None
        finally:
            self._searching.discard(name)
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _LoaderProxy(spec.loader, name)
        return spec

    def invalidate_caches(self) -> None:
        pass


def install() -> None:
    """Insert the finder once (idempotent) and run the callbacks of targets that are already imported."""
    if os.environ.get(DISABLE_VARIABLE, "").strip() not in ("", "0"):
        return
    if not any(isinstance(f, _PostImportFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _PostImportFinder())
    for name in TARGETS:
        if name in sys.modules:
            _run(name)


try:
    install()
except Exception as _exc:  # never break interpreter start
    warnings.warn(f"sb3-dmash startup hook could not install: {_exc!r}", RuntimeWarning)
