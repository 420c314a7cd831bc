"""The env throughput benchmark script (benchmarks/env_throughput.py) on a few cheap ids."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("env_throughput", ROOT / "benchmarks" / "env_throughput.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_entries_cover_the_suite(bench) -> None:
    labels = [label for label, _, _ in bench.entries()]
    assert len(labels) == 14 and labels[-1] == "AIB-ODE-v0 (k=5)"
    assert [label for label, _, _ in bench.entries(["AIB-DI-v0"])] == ["AIB-DI-v0"]


def test_run_and_write(bench, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(f"# title\n\nbefore\n{bench.START_MARKER}\nold table\n{bench.END_MARKER}\nafter\n")
    # 150 steps of DI: one reset inside the timed run (T = 100)
    rc = bench.main(["--steps", "150", "--repeats", "2", "--envs", "AIB-DI-v0", "AIB-ODE-v0", "--write", str(doc)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "| env | simulator | steps/s | ms/step |" in out
    assert "| `AIB-DI-v0` | numpy |" in out and "| `AIB-ODE-v0` | numpy |" in out
    assert "| `AIB-ODE-v0 (k=5)` | numpy |" in out  # the ODE-k suite entry
    text = doc.read_text()
    assert text.startswith("# title\n\nbefore\n") and text.endswith(f"{bench.END_MARKER}\nafter\n")
    assert "old table" not in text and "| `AIB-DI-v0` | numpy |" in text and "median of 2 runs" in text
    # writing again replaces the section instead of appending
    bench.main(["--steps", "50", "--repeats", "1", "--envs", "AIB-DI-v0", "--write", str(doc)])
    text = doc.read_text()
    assert text.count("| env | simulator |") == 1 and "AIB-ODE-v0" not in text


def test_measure(bench) -> None:
    rates = bench.measure("AIB-DIPerm-v0", {}, steps=120, repeats=3)
    assert len(rates) == 3 and all(rate > 0 for rate in rates)


def test_errors(bench, tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text("no markers\n")
    with pytest.raises(ValueError, match="has no section"):
        bench.write_section(doc, "table")
    with pytest.raises(SystemExit):
        bench.main(["--envs", "AIB-Foo-v0"])
    with pytest.raises(SystemExit):
        bench.main(["--steps", "0"])


def test_doc_has_the_section(bench) -> None:
    text = (ROOT / "docs" / "benchmark.md").read_text()
    assert text.count(bench.START_MARKER) == 1 and text.count(bench.END_MARKER) == 1
    assert text.index(bench.START_MARKER) < text.index(bench.END_MARKER)
