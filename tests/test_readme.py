"""The README's two commands stay honest: CI runs its test command, and its training command runs."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def test_ci_runs_the_readme_test_command():
    test_command = next(c for c in readme_commands() if "pytest" in c)
    pytest_part = test_command.split("&&")[-1].strip()
    ci = (ROOT / ".ci" / "run").read_text()
    assert pytest_part in ci.splitlines(), f"{pytest_part!r} is not a line of .ci/run"
    for install in test_command.split("&&")[:-1]:
        assert install.strip().replace("pip install", "python -m pip install --quiet") in ci


@pytest.mark.expensive
def test_readme_training_command_runs(tmp_path):
    command = next(c for c in readme_commands() if "rl_zoo3.train" in c)
    train = shlex.split(command.split("&&")[-1].strip())
    assert train[:3] == ["python", "-m", "rl_zoo3.train"]
    # The README's own command, at a tiny budget (a later -n / -params overrides the earlier one).
    tiny = [
        "-n",
        "240",
        "--log-folder",
        str(tmp_path),
        "-params",
        "n_envs:2",
        "learning_starts:100",
        "batch_size:8",
        "buffer_size:2000",
        "policy_kwargs:dict(net_arch=[16], hypernet_arch=[8], encoder_dim=8)",
    ]
    out = subprocess.run([sys.executable, *train[1:], *tiny], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert list(tmp_path.glob("dmash_sac/AIB-DI-v0_1/AIB-DI-v0.zip"))
