"""benchmarks/step_bench.py runs end to end (a smoke run: times are not asserted, only what
the FLOP counter must show, which does not depend on the machine)."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "step_bench.py"


def test_the_benchmark_runs_and_counts_the_engine_s_saved_flops(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--models", "mlp", "--batches", "16",
                             "--methods", "gp,r1", "--iters", "1", "--warmup", "0", "--threads", "1", "--json", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = {r["method"]: r for r in json.loads(out.read_text())}
    assert rows.keys() == {"gp", "r1"}
    for r in rows.values():
        assert r["engine_s"] > 0 and r["textbook_s"] > 0 and r["single_pass_s"] > 0
    # At interpolates the constant-slope double backward skips a backward pass of zeros; for
    # R1 the loss walks that forward graph anyway, so both do the same arithmetic.
    assert rows["gp"]["critic_step_gflop"] < rows["gp"]["textbook_critic_step_gflop"]
    assert rows["r1"]["critic_step_gflop"] == rows["r1"]["textbook_critic_step_gflop"]
