"""The scripts in examples/ run end to end at a tiny budget (their results are not checked here)."""

import json


def test_train_di_runs_and_prints_the_per_mode_table(run_script) -> None:
    args = ["--vector-steps", "4", "--learning-starts", "30", "--net-arch", "16", "--eval-episodes", "1"]
    out = run_script("examples/train_di.py", *args)
    assert "| agent | split | AER | inverted (action_factor -1) | nominal (+1) |" in out.stdout
    for agent in ("DMA*-SH (DMASHSAC)", "SAC (context-unaware)"):
        for split in ("train", "eval_in", "eval_out"):
            assert f"| {agent} | {split} |" in out.stdout


def test_train_di_resumes_from_its_checkpoints_and_refuses_other_arguments(run_script, tmp_path) -> None:
    tiny = ["--learning-starts", "30", "--net-arch", "16", "--eval-episodes", "1", "--algos", "dmash", "--eval-every", "2"]
    ckpt = ["--checkpoint-dir", str(tmp_path)]
    first = run_script("examples/train_di.py", "--vector-steps", "4", *tiny, *ckpt)
    assert "dmash 2 vector steps" in first.stdout and "dmash 4 vector steps" in first.stdout
    saved = (tmp_path / "dmash_seed0.zip").read_bytes()

    # A larger budget continues from the saved 4 steps instead of starting again.
    plot = tmp_path / "curves.png"
    second = run_script("examples/train_di.py", "--vector-steps", "6", *tiny, *ckpt, "--plot", str(plot))
    assert "resumed from" in second.stdout and "at 4 vector steps" in second.stdout
    assert "dmash 2 vector steps" not in second.stdout and "dmash 6 vector steps" in second.stdout
    history = [json.loads(line) for line in (tmp_path / "dmash_seed0_evals.jsonl").read_text().splitlines()]
    assert [record["vector_steps"] for record in history] == [2, 4, 6]
    assert set(history[-1]) >= {"train", "eval_in", "eval_out"}
    assert plot.read_bytes().startswith(b"\x89PNG")

    # Other network sizes do not resume (or overwrite) the checkpoint: a clear error, the files kept.
    resumed = (tmp_path / "dmash_seed0.zip").read_bytes()
    assert resumed != saved
    mismatch = run_script(
        "examples/train_di.py", "--vector-steps", "8", *tiny[:2], "--net-arch", "32", *tiny[4:], *ckpt, check=False
    )
    assert mismatch.returncode == 2
    assert "was trained with --net-arch [16], not [32]" in mismatch.stderr
    assert (tmp_path / "dmash_seed0.zip").read_bytes() == resumed
