"""The scripts in examples/ run end to end at a tiny budget (their results are not checked here)."""


def test_train_di_runs_and_prints_the_per_mode_table(run_script) -> None:
    args = ["--vector-steps", "4", "--learning-starts", "30", "--net-arch", "16", "--eval-episodes", "1"]
    out = run_script("examples/train_di.py", *args)
    assert "| agent | split | AER | inverted (action_factor -1) | nominal (+1) |" in out.stdout
    for agent in ("DMA*-SH (DMASHSAC)", "SAC (context-unaware)"):
        for split in ("train", "eval_in", "eval_out"):
            assert f"| {agent} | {split} |" in out.stdout
