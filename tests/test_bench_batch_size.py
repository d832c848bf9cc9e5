"""benchmarks/bench_batch_size.py: per-image step costs at two batch sizes, side by side."""

import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture()
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))  # it imports bench_train_step beside it
    import bench_batch_size

    return bench_batch_size


def test_tiny_run_reports_per_image_costs_and_ratios(bench, tmp_path):
    out = tmp_path / "batch.json"
    args = ["--methods", "vanilla", "--batch-sizes", "16,8", "--steps", "4", "--rounds", "1",
            "--skip", "1", "--json", str(out)]
    result = bench.main(args)
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert result["command"] == "benchmarks/bench_batch_size.py " + " ".join(args)
    row = result["methods"]["vanilla"]
    assert set(row["ms_per_image"]) == {8, 16}  # sorted and deduplicated sizes
    assert all(v > 0 for v in row["ms_per_image"].values())
    assert row["ratio_to_largest"][16] == 1.0 and row["ratio_to_largest"][8] > 0
    low, high = row["load_average"]
    assert 0 <= low <= high


def test_steps_must_exceed_the_skipped_gaps(bench):
    with pytest.raises(SystemExit):
        bench.main(["--steps", "2", "--skip", "2"])
