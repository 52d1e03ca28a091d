"""benchmarks/bench_isolation.py end to end, small: api.py on the tiny model, the fault table and a short soak."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))


@pytest.mark.slow
def test_every_fault_case_holds_and_a_short_soak_is_clean(tiny_model_dir, tmp_path):
    import bench_isolation

    out = tmp_path / "isolation.json"
    result = bench_isolation.main(model_dir=str(tiny_model_dir), requests=32, clients=8, output=str(out))
    assert len(result["faults"]) == 14 and all(row["ok"] for row in result["faults"])
    soak = result["soak"]
    assert soak["valid"] > 0 and soak["invalid"] > 0 and soak["left"] > 0
    assert soak["valid_errors"] == soak["wrong_answers"] == soak["invalid_not_4xx"] == soak["leaked_generations"] == 0
    assert json.loads(out.read_text())["soak"] == soak
