"""Packaging: the hatchling wheel, installed into a new virtual environment, works there.

The new environment is made with ``python -m venv --without-pip``; the wheel goes in with this environment's pip
(``pip --python``, ``--no-deps --no-index``: offline). The dependencies (torch, SB3, rl-zoo3...) are then made visible
through a ``.pth`` file that lists this environment's site-packages directories: ``site`` appends them to
``sys.path`` after the new environment's own site-packages and does not run *their* ``.pth`` files, so this
environment's editable install of sb3-dmash (and its copy of the hook) cannot shadow the wheel. Every check runs in a
fresh interpreter of the new environment, outside the source tree, and asserts where the modules came from.
(``--system-site-packages`` would not do: it exposes the base interpreter's site-packages, not this virtual
environment's, and so neither torch nor rl-zoo3.)
"""

from __future__ import annotations

import importlib.util
import os
import site
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HOOK_FILES = ("_sb3_dmash_hook.py", "sb3_dmash_hook.pth", "sb3_dmash_hook.start")
YML_FILES = ("dmash_sac.yml", "sac.yml", "ppo_lstm.yml")


def _environ() -> dict[str, str]:
    drop = ("SB3_DMASH_NO_HOOK", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")
    environ = {k: v for k, v in os.environ.items() if k not in drop}
    environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return environ


def _check(args: list[str], cwd: Path, timeout: int = 300) -> str:
    result = subprocess.run(args, cwd=cwd, env=_environ(), capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, (
        f"exit code {result.returncode} for {args}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    )
    return result.stdout + result.stderr


def _new_venv(path: Path) -> tuple[Path, Path]:
    """A bare virtual environment: its python and its site-packages directory."""
    _check([sys.executable, "-m", "venv", "--without-pip", str(path)], path.parent)
    python = path / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    purelib = _check([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], path.parent)
    return python, Path(purelib.strip())


def _link_dependencies(purelib: Path) -> None:
    """Expose this environment's installed packages (not its .pth files) to the new environment."""
    directories = [d for d in site.getsitepackages() if Path(d).is_dir()]
    (purelib / "zz_sb3_dmash_test_dependencies.pth").write_text("\n".join(directories) + "\n")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("build")
    out = tmp_path_factory.mktemp("dist")
    args = [sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(ROOT)]
    if importlib.util.find_spec("hatchling") is not None:
        args.insert(4, "--no-isolation")  # offline, with this environment's hatchling
    _check(args, out, timeout=600)
    (path,) = out.glob("sb3_dmash-*-py3-none-any.whl")
    return path


def test_wheel_contents(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        # the hook files at the top level of site-packages, identical to the repository's
        for name in HOOK_FILES:
            assert archive.read(name) == (ROOT / name).read_bytes(), name
        # the rl-zoo3 hyperparameter files inside the package
        for name in YML_FILES:
            assert archive.read(f"sb3_dmash/hyperparams/{name}") == (ROOT / "hyperparams" / name).read_bytes(), name
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        assert "aib = aib.registration:register_envs" in archive.read(entry_points).decode()
    assert {"sb3_dmash/__init__.py", "sb3_dmash/zoo.py", "aib/__init__.py", "aib/registration.py", "aib/vec_env.py"} <= names
    assert not [n for n in names if n.startswith(("tests/", "hyperparams/", "envs/", "docs/"))]


@pytest.mark.expensive
def test_wheel_in_new_venv(wheel: Path, tmp_path: Path) -> None:
    python, purelib = _new_venv(tmp_path / "venv")
    # install first (pip then sees only the new environment), then link the dependencies
    _check(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)],
        tmp_path,
    )
    for name in HOOK_FILES:
        assert (purelib / name).is_file(), name
    _link_dependencies(purelib)
    work = tmp_path / "work"
    work.mkdir()

    # gym.make with no import: the hook registered the ids; everything comes from the wheel
    script = f"""
        import sys
        assert "_sb3_dmash_hook" in sys.modules and "aib" not in sys.modules
        import gymnasium as gym
        env = gym.make("AIB-DI-v0")
        env.reset(seed=0)
        env.step(env.action_space.sample())
        import _sb3_dmash_hook, aib, sb3_dmash
        from sb3_dmash import zoo
        purelib = {str(purelib)!r}
        for path in (_sb3_dmash_hook.__file__, aib.__file__, sb3_dmash.__file__, zoo.__file__, zoo.hyperparams_file()):
            assert str(path).startswith(purelib), path
        assert str(zoo.hyperparams_file("sac.yml")) == purelib + "/sb3_dmash/hyperparams/sac.yml"
        print("OK")
    """
    assert _check([str(python), "-c", textwrap.dedent(script)], work).rstrip().endswith("OK")

    # a tiny rl-zoo3 run reads the yml shipped inside the wheel
    output = _check(
        [str(python), "-m", "rl_zoo3.train", "--algo", "dmash_sac", "--env", "AIB-DI-v0", "--num-threads", "1",
         "--seed", "0", "-n", "60", "-params", "n_envs:2", "learning_starts:40", "batch_size:8", "buffer_size:1000",
         "policy_kwargs:dict(net_arch=[16], hypernet_arch=[8], encoder_dim=8)", "--eval-freq", "-1", "-f", "logs"],
        work,
    )  # fmt: skip
    assert f"Loading hyperparameters from: {purelib}/sb3_dmash/hyperparams/dmash_sac.yml" in output
    assert (work / "logs" / "dmash_sac" / "AIB-DI-v0_1" / "AIB-DI-v0.zip").is_file()


def test_editable_layout_reads_source_tree(tmp_path: Path) -> None:
    # What hatchling's editable install writes (verified on a real one): a `_editable_impl_sb3_dmash.pth` that puts the
    # source tree (and envs/, for `aib`) on sys.path, plus *copies* of the force-included files: the hook files and
    # sb3_dmash/hyperparams/*.yml. The copies go stale when the repository's files change, so the yml must come from
    # the source tree.
    python, purelib = _new_venv(tmp_path / "venv")
    (purelib / "_editable_impl_sb3_dmash.pth").write_text(f"{ROOT}\n{ROOT / 'envs'}\n")
    for name in HOOK_FILES:
        (purelib / name).write_bytes((ROOT / name).read_bytes())
    (purelib / "sb3_dmash" / "hyperparams").mkdir(parents=True)
    for name in YML_FILES:
        (purelib / "sb3_dmash" / "hyperparams" / name).write_text("stale: copy\n")
    _link_dependencies(purelib)
    script = f"""
        import sys
        import gymnasium as gym
        gym.make("AIB-DI-v0").reset(seed=0)  # the hook, with no import
        import sb3_dmash
        from pathlib import Path
        from sb3_dmash import zoo
        root = Path({str(ROOT)!r})
        assert Path(sb3_dmash.__file__) == root / "sb3_dmash" / "__init__.py", sb3_dmash.__file__
        assert zoo.hyperparams_file() == root / "hyperparams" / "dmash_sac.yml"
        assert zoo.default_config("sac", "AIB-DI-v0") == str(root / "hyperparams" / "sac.yml")
        print("OK")
    """
    work = tmp_path / "work"
    work.mkdir()
    assert _check([str(python), "-c", textwrap.dedent(script)], work).rstrip().endswith("OK")
