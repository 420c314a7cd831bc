"""The benchmark scripts (throughput.py, context_use.py) run end to end and report what they promise.

Their numbers are not checked here (timed tests are not reliable on shared machines); only that they run and report.
"""


def test_throughput_benchmark_reports_every_configuration(run_script) -> None:
    args = ["--envs", "AIB-DI-v0", "--vector-steps", "2", "--learning-starts", "20", "--repeats", "1"]
    out = run_script("benchmarks/throughput.py", *args, "--configs", "sac", "dmash", "dmash_bf16", "dmash_unchecked")
    for label in (
        "SB3 SAC (as shipped)",
        "DMA*-SH, exact",
        "DMA*-SH, hypernet_dtype='bfloat16' (approximation)",
        "DMA*-SH, exact, non-finite check off (only to measure its cost)",
    ):
        assert f"| AIB-DI-v0 | {label}" in out.stdout
    assert "device cpu" in out.stdout
    assert "replay bytes per transition" in out.stdout
    assert "hypernetwork products" in out.stdout
    assert "non-finite check" in out.stdout and "% of the exact update" in out.stdout
    assert "with the check / without it" in out.stdout


def test_context_use_benchmark_runs(run_script) -> None:
    args = ["--updates", "4", "--every", "2", "--learning-starts", "30", "--net-arch", "8"]
    out = run_script("benchmarks/context_use.py", *args)
    lines = [line for line in out.stdout.splitlines() if line.startswith("dmash ")]
    assert [line.split(" updates")[0] for line in lines] == ["dmash 2", "dmash 4"]
    assert all("probe" in line and "|a+ - a-|" in line and "dynamics loss" in line for line in lines)
