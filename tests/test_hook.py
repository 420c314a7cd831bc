"""The startup hook (``_sb3_dmash_hook`` + ``sb3_dmash_hook.pth`` / ``.start``).

Every behavioural test runs in a fresh interpreter (``sys.executable``), because the hook acts at interpreter start.
"""

from __future__ import annotations

import inspect
import os
import site
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import _sb3_dmash_hook

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str, env: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != _sb3_dmash_hook.DISABLE_VARIABLE}
    environ["OMP_NUM_THREADS"] = "1"
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, *args, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=environ,
        timeout=120,
        check=False,
    )


def _ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"exit code {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


def _site_packages() -> list[Path]:
    return [Path(p) for p in site.getsitepackages() if (Path(p) / "sb3_dmash_hook.pth").exists()]


# ---------------------------------------------------------------------------------------------------------------------
# the files
# ---------------------------------------------------------------------------------------------------------------------
def test_pth_and_start_files() -> None:
    pth = (ROOT / "sb3_dmash_hook.pth").read_text()
    start = (ROOT / "sb3_dmash_hook.start").read_text()
    # .pth: the single line `import _sb3_dmash_hook` (importing the module calls install())
    assert [line for line in pth.splitlines() if line.strip()] == ["import _sb3_dmash_hook"]
    # .start (PEP 829): the entry point `module:callable`, which must name the hook's install function
    lines = [line for line in start.splitlines() if line.strip() and not line.startswith("#")]
    assert lines == ["_sb3_dmash_hook:install"]
    module_name, function = lines[0].split(":")
    assert module_name == _sb3_dmash_hook.__name__ == (ROOT / "_sb3_dmash_hook.py").stem
    install = getattr(_sb3_dmash_hook, function)
    assert callable(install) and install is _sb3_dmash_hook.install
    assert all(p.default is not p.empty for p in inspect.signature(install).parameters.values())
    # the module calls install() when imported (what the .pth relies on)
    source = (ROOT / "_sb3_dmash_hook.py").read_text()
    assert "\n    install()\n" in source or "\ninstall()\n" in source
    # the .pth stem sorts after the build backends' editable .pth files
    for editable in ("__editable__.sb3_dmash-0.1.0.pth", "_editable_impl_sb3_dmash.pth"):
        assert sorted(["sb3_dmash_hook.pth", editable])[-1] == "sb3_dmash_hook.pth"


def test_installed_files_match_the_repository() -> None:
    installed = _site_packages()
    assert installed, "sb3_dmash_hook.pth is not installed in any site-packages directory (pip install -e .)"
    for directory in installed:
        for name in ("sb3_dmash_hook.pth", "sb3_dmash_hook.start", "_sb3_dmash_hook.py"):
            assert (directory / name).read_text() == (ROOT / name).read_text(), (
                f"{directory / name} differs from the repository copy: reinstall (pip install -e .)"
            )
        # and every editable .pth is processed before ours
        pth_files = sorted(p.name for p in directory.glob("*.pth"))
        assert all(pth_files.index(name) < pth_files.index("sb3_dmash_hook.pth") for name in pth_files if "editable" in name)


# ---------------------------------------------------------------------------------------------------------------------
# behaviour in a fresh interpreter
# ---------------------------------------------------------------------------------------------------------------------
def test_make_without_import() -> None:
    result = _ok(
        _run(
            """
            import sys
            assert "_sb3_dmash_hook" in sys.modules
            assert not [m for m in ("aib", "gymnasium", "numpy", "torch") if m in sys.modules]  # nothing at startup
            import gymnasium as gym
            assert "AIB-DI-v0" in gym.registry and "AIB-Cheetah-v0" in gym.registry
            # registration imports only the light modules: no env module, simulator, SB3 or torch yet
            heavy = ("aib.toy.double_integrator", "aib.dmc", "dm_control", "mujoco", "stable_baselines3", "torch")
            assert not [m for m in heavy if m in sys.modules], [m for m in heavy if m in sys.modules]
            env = gym.make("AIB-DI-v0")
            obs, info = env.reset(seed=0)
            assert info["context_id"] == "train/0"
            env = gym.make("AIB-Cheetah-v0")
            obs, info = env.reset(seed=0)
            env.step(env.action_space.sample())
            assert obs.shape == (17,)
            assert "torch" not in sys.modules
            assert not [m for m in sys.modules if m.startswith("sb3_dmash.dmash")]
            assert "stable_baselines3" not in sys.modules
            print("OK")
            """
        )
    )
    assert result.stdout.strip().endswith("OK")


def test_import_gymnasium_is_quiet() -> None:
    result = _ok(_run("import gymnasium as gym; assert 'AIB-DI-v0' in gym.registry"))
    assert "sb3-dmash" not in result.stderr and "Warning" not in result.stderr, result.stderr


def test_pass() -> None:
    result = _ok(_run("pass"))
    assert result.stderr == ""


@pytest.mark.parametrize(("value", "registered"), [("1", False), ("yes", False), ("0", True), ("", True)])
def test_opt_out(value: str, registered: bool) -> None:
    _ok(
        _run(
            f"""
            import sys
            import gymnasium as gym
            finders = [f for f in sys.meta_path if type(f).__name__ == "_PostImportFinder"]
            assert len(finders) == {int(registered)}, finders
            assert ("AIB-DI-v0" in gym.registry) is {registered}
            import aib  # the explicit import always registers
            assert "AIB-DI-v0" in gym.registry
            gym.make("AIB-DI-v0").reset(seed=0)
            """,
            env={_sb3_dmash_hook.DISABLE_VARIABLE: value},
        )
    )


def test_install_is_idempotent() -> None:
    _ok(
        _run(
            """
            import sys
            import _sb3_dmash_hook as hook
            def count():
                return sum(type(f).__name__ == "_PostImportFinder" for f in sys.meta_path)
            assert count() == 1
            hook.install()
            hook.install()
            assert count() == 1
            import gymnasium as gym
            hook.install()  # runs the callbacks of already imported targets again: a no-op
            assert count() == 1
            assert sum(k.startswith("AIB-") for k in gym.registry) == 13
            """
        )
    )


def test_import_aib_twice() -> None:
    result = _ok(
        _run(
            """
            import importlib, sys, warnings
            import gymnasium as gym
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # e.g. gymnasium's "Overriding environment ... already in registry"
                import aib
                import aib
                aib.register_envs()
                aib.register_envs()
                importlib.reload(aib)
                del sys.modules["aib"]
                import aib
                from aib.registration import register_envs
                register_envs()
            assert sum(k.startswith("AIB-") for k in gym.registry) == 13
            gym.make("AIB-DIPerm-v0").reset(seed=0)
            print("OK")
            """
        )
    )
    assert result.stderr == ""


def test_missing_target_warns() -> None:
    result = _ok(
        _run(
            """
            import warnings
            import _sb3_dmash_hook as hook
            hook.TARGETS["gymnasium.envs"] = ("aib_missing_module_xyz", "register_envs")
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                import gymnasium as gym
            messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
            assert len(messages) == 1, messages
            assert "aib_missing_module_xyz.register_envs() failed after importing gymnasium.envs" in messages[0]
            assert "No module named 'aib_missing_module_xyz'" in messages[0]
            assert "SB3_DMASH_NO_HOOK=1" in messages[0]
            assert "AIB-DI-v0" not in gym.registry
            # the interpreter keeps working: gymnasium is usable, and `import aib` still registers
            gym.make("CartPole-v1").reset(seed=0)
            import aib
            gym.make("AIB-DI-v0").reset(seed=0)
            print("OK")
            """
        )
    )
    assert result.stdout.strip() == "OK"


def test_failing_callback_warns_to_stderr() -> None:
    # the target module exists but the callback raises; the warning reaches stderr and the exit code stays 0
    result = _ok(
        _run(
            """
            import _sb3_dmash_hook as hook
            hook.TARGETS["gymnasium.envs"] = ("json", "no_such_function")
            import gymnasium as gym
            gym.make("CartPole-v1")
            print("alive")
            """
        )
    )
    assert result.stdout.strip() == "alive"
    assert "RuntimeWarning: sb3-dmash startup hook: json.no_such_function() failed after importing gymnasium.envs" in (
        result.stderr
    )


def test_unimportable_registration_at_startup(tmp_path: Path) -> None:
    # a broken `aib` shadows the real one (PYTHONPATH comes before site-packages): importing gymnasium warns, no crash
    (tmp_path / "aib").mkdir()
    (tmp_path / "aib" / "__init__.py").write_text("raise ImportError('broken aib for the test')\n")
    result = _ok(
        _run(
            "import gymnasium as gym; gym.make('CartPole-v1'); print('alive')",
            env={"PYTHONPATH": str(tmp_path)},
        )
    )
    assert result.stdout.strip() == "alive"
    assert "RuntimeWarning" in result.stderr and "aib.registration.register_envs() failed" in result.stderr
    assert "broken aib for the test" in result.stderr


def test_pass_when_install_raises(tmp_path: Path) -> None:
    # A copy of the hook whose install() raises shadows the installed one (PYTHONPATH comes before site-packages, so
    # the .pth line `import _sb3_dmash_hook` imports it at startup): `python -c pass` still works and only warns.
    source = (ROOT / "_sb3_dmash_hook.py").read_text()
    marker = "def install() -> None:\n"
    assert source.count(marker) == 1
    broken = source.replace(marker, marker + "    raise RuntimeError('hook install failed for the test')\n", 1)
    (tmp_path / "_sb3_dmash_hook.py").write_text(broken)
    result = _ok(_run("pass", env={"PYTHONPATH": str(tmp_path)}))
    assert "RuntimeWarning: sb3-dmash startup hook could not install" in result.stderr
    assert "hook install failed for the test" in result.stderr
    # and gymnasium still imports (without the AIB ids: the hook is not installed)
    result = _ok(
        _run(
            "import gymnasium as gym; assert 'AIB-DI-v0' not in gym.registry; gym.make('CartPole-v1')",
            env={"PYTHONPATH": str(tmp_path)},
        )
    )


def test_pass_when_hook_module_raises(tmp_path: Path) -> None:
    # even a hook module that fails outright at import does not break interpreter start (site reports the .pth line)
    (tmp_path / "_sb3_dmash_hook.py").write_text("raise RuntimeError('hook module broken for the test')\n")
    result = _ok(_run("print('alive')", env={"PYTHONPATH": str(tmp_path)}))
    assert result.stdout.strip() == "alive"


def test_install_failure_in_process() -> None:
    # install() raising inside the module's own import (here: an immutable sys.meta_path) only warns
    result = _ok(
        _run(
            """
            import sys, warnings
            assert "_sb3_dmash_hook" not in sys.modules  # -S: site did not run, so the hook is not loaded yet
            import site
            sys.path.extend(site.getsitepackages())
            saved = sys.meta_path
            sys.meta_path = tuple(saved)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                import _sb3_dmash_hook
            sys.meta_path = saved
            assert [str(w.message) for w in caught if "could not install" in str(w.message)], caught
            print("alive")
            """,
            args=("-S",),
        )
    )
    assert result.stdout.strip() == "alive"
