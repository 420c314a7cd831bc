"""What ``load`` checks before it trusts a model zip: complete, and saved by the algorithm that loads it.

SB3's own ``load`` says ``AssertionError: No data found`` for a truncated file, and fails on an unrelated parameter or
replay-buffer mismatch when given another algorithm's model.
"""

from __future__ import annotations

import base64
import importlib
import io
import json
import pathlib
import zipfile
import zlib
from typing import Any

import cloudpickle
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.save_util import open_path


def check_saved_model(
    path: str | pathlib.Path | io.BufferedIOBase,
    policy_base: type,
    algorithm_name: str,
    custom_objects: dict[str, Any] | None = None,
) -> None:
    """Raise a ``ValueError`` if ``path`` is not a complete model zip, or holds the model of another algorithm.

    :param path: what ``load`` was given.
    :param policy_base: the policy class the loading algorithm saves (a subclass of it passes).
    :param algorithm_name: the loading algorithm's name, for the message.
    :param custom_objects: ``load``'s ``custom_objects`` (a ``policy_class`` there wins over the file's).
    """
    file = open_path(path, "r", verbose=0, suffix="zip")  # SB3's rule: "model" finds "model.zip"
    name = str(getattr(file, "name", None) or path)  # the file opened (with its suffix), else the file object
    try:
        with zipfile.ZipFile(file) as archive:
            # A cut-off zip can still open: zipfile then finds the directory of a .pth entry (itself a zip) inside it
            missing = [entry for entry in ("data", "policy.pth") if entry not in archive.namelist()]
            if missing:
                raise ValueError(_incomplete_message(name, f"no {' and no '.join(missing)} entry"))
            bad = archive.testzip()  # the CRC of every entry: a few ms for a model zip (the replay buffer is apart)
            if bad is not None:
                raise ValueError(_incomplete_message(name, f"bad CRC in the {bad} entry"))
            data = json.loads(archive.read("data").decode())
    except (zipfile.BadZipFile, zlib.error, EOFError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(_incomplete_message(name, f"{type(e).__name__}: {e}")) from e
    finally:
        if isinstance(path, (str, pathlib.Path)):
            file.close()
    policy_class = _saved_policy_class(data, custom_objects)
    if not isinstance(policy_class, type) or issubclass(policy_class, policy_base):
        return  # the algorithm's own model (or a policy class SB3 cannot read either: its own load warns about it)
    algorithm = _algorithm_of(policy_class)
    if algorithm is None:
        raise ValueError(
            f"{name} holds a model with policy {policy_class.__module__}.{policy_class.__qualname__}, not a "
            f"{algorithm_name} model; load it with the algorithm that saved it"
        )
    raise ValueError(
        f"{name} holds a {algorithm.rpartition('.')[2]} model (policy {policy_class.__qualname__}), not a "
        f"{algorithm_name} model; load it with {algorithm}.load"
    )


def _incomplete_message(name: str, detail: str) -> str:
    return (
        f"{name} is not a complete model saved by .save(): the file is truncated or corrupt ({detail}); copy it again, "
        "or save the model again"
    )


def _saved_policy_class(data: dict[str, Any], custom_objects: dict[str, Any] | None) -> Any:
    """The ``policy_class`` of a model's ``data`` entry, decoded as SB3's ``json_to_data`` does (None if it cannot)."""
    if custom_objects and "policy_class" in custom_objects:
        return custom_objects["policy_class"]
    entry = data.get("policy_class")
    if not isinstance(entry, dict) or ":serialized:" not in entry:
        return None
    try:
        return cloudpickle.loads(base64.b64decode(entry[":serialized:"].encode()))
    except Exception:  # e.g. a custom policy whose module is not importable here
        return None


def _algorithm_of(policy_class: type) -> str | None:
    """The algorithm whose policy aliases hold ``policy_class``, looked up next to it: ``"stable_baselines3.SAC"`` for
    ``stable_baselines3.sac.policies.SACPolicy`` (the top-level name where the package exports it)."""
    package = policy_class.__module__.rpartition(".")[0]
    top = package.partition(".")[0]
    try:
        module = importlib.import_module(package)
    except Exception:
        return None
    for attr, obj in vars(module).items():
        if isinstance(obj, type) and issubclass(obj, BaseAlgorithm) and policy_class in obj.policy_aliases.values():
            return f"{top}.{attr}" if getattr(importlib.import_module(top), attr, None) is obj else f"{package}.{attr}"
    return None
