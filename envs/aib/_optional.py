"""Imports of the optional extras (``sb3-dmash[dmc]``, ``sb3-dmash[mujoco]``) with an error that says what to install.

Standard library only: ``aib`` never imports sb3_dmash or torch.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from aib.registration import ENVS


def require(module: str, extra: str, who_needs: str | None = None) -> ModuleType:
    """Import ``module`` of an optional extra; if it (or one of its own dependencies) is missing, say what to install.

    :param module: the module to import (``"dm_control.suite"``, ``"mujoco"``, ``"pandas"``).
    :param extra: the sb3-dmash extra that provides it (``"dmc"``, ``"mujoco"``, ``"analysis"``).
    :param who_needs: the message's subject and verb (``"this feature of sb3-dmash needs"``); default: the AIB ids of
        the extra and "need".
    :raises ModuleNotFoundError: naming the missing module and the ``pip install "sb3-dmash[extra]"`` command.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        # e.name is the module really missing: `module` itself or a dependency (mujoco for dm_control)
        missing = (e.name or module).partition(".")[0]  # the package to install, not one of its submodules
        if who_needs is None:
            who_needs = ", ".join(info.env_id for info in ENVS if info.requires == extra) + " need"
        raise ModuleNotFoundError(
            f"{who_needs} the optional module {missing!r}, which is not installed: "
            f'install the extra with pip install "sb3-dmash[{extra}]"',
            name=missing,
        ) from e
