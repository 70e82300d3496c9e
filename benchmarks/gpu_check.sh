#!/usr/bin/env bash
# One prepared check of every CUDA path, for a short loan of a GPU machine (well under ten
# minutes on one GPU). What it measures lands in $OUT (default ./gpu-check) as three files, the
# few a loan brings back: gpu_check.json (everything), gpu_check.log, gpu_tests.xml. Runs and
# intermediate files go to $SCRATCH.
#
#   OUT=gpu-check bash benchmarks/gpu_check.sh
#   DEVICE=cpu QUICK=1 bash benchmarks/gpu_check.sh        # a smoke run of the script itself, on a CPU
#
# It uses the machine's own python3 (with torch) and this checkout's src/ on PYTHONPATH, so it
# needs no install; torch-fidelity (for the eval benchmark's Inception timing) is taken from
# .whl/ when a wheel was carried there, and skipped otherwise.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check}
SCRATCH=${SCRATCH:-$(mktemp -d)}
mkdir -p "$OUT" "$SCRATCH"
exec > >(tee "$OUT/gpu_check.log") 2>&1
export PYTHONPATH="$PWD/src:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 GANCTL_CACHE="$SCRATCH/cache"
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
if [ "${QUICK:-0}" = 1 ]; then steps=4 models=mlp iters=2 images=4 n=200; else steps=300 models=mlp,dcgan32,dcgan64 iters=20 images=1000 n=2000; fi
if ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi
step() { echo "=== $(date +%T) $*"; }
status=0

step environment
$PY - <<'PY' > "$SCRATCH/env.json"
import json, platform, torch
print(json.dumps({"torch": torch.__version__, "cuda": torch.version.cuda, "gpu": torch.cuda.get_device_name(),
                  "capability": torch.cuda.get_device_capability(), "python": platform.python_version()}))
PY
cat "$SCRATCH/env.json"

step "1. the GPU-marked tests (and the CUDA-dependent ones)"
$PY -m pytest -q -m gpu tests/ -p no:cacheprovider --junitxml="$OUT/gpu_tests.xml" || status=1

step "2. shapes for 300 steps with each precision and with --compile; gradnorm and eval on each"
common=(--data shapes --device "$DEVICE" --steps "$steps" --eval-every $((steps / 2)) --sample-every 0
        --ckpt-every $((steps / 2)) --lipschitz gp)
for variant in none bf16 fp16 compile; do
    if [ "$variant" = compile ]; then flags=(--compile); else flags=(--amp "$variant"); fi
    run="$SCRATCH/runs/$variant"
    $PY -m ganctl train "${common[@]}" "${flags[@]}" --out "$run" --overwrite --json > "$SCRATCH/train_$variant.json" || status=1
    $PY -m ganctl gradnorm "$run" --device "$DEVICE" --json > "$SCRATCH/gradnorm_$variant.json" || true
    $PY -m ganctl eval "$run" --device "$DEVICE" --n "$n" --json > "$SCRATCH/eval_$variant.json" || status=1
done

step "3. the step benchmark: MLP, DCGAN 32 and 64, float32 and bf16, with peak memory"
$PY benchmarks/step_bench.py --device "$DEVICE" --models "$models" --iters "$iters" --json "$SCRATCH/bench_fp32.json" \
    || status=1
$PY benchmarks/step_bench.py --device "$DEVICE" --models "$models" --iters "$iters" --amp bf16 \
    --json "$SCRATCH/bench_bf16.json" || status=1

step "4. what image evaluation costs on this GPU"
$PY benchmarks/eval_bench.py --images "$images" --inception-images "$images" --json "$SCRATCH/eval_bench.json" || status=1

step "5. one JSON"
$PY - "$SCRATCH" "$OUT" <<'PY'
import json, pathlib, sys
scratch, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
gathered = {}
for path in sorted(scratch.glob("*.json")):
    try:
        gathered[path.stem] = json.loads(path.read_text())
    except ValueError:
        gathered[path.stem] = {"unreadable": path.read_text()[-2000:]}
(out / "gpu_check.json").write_text(json.dumps(gathered, indent=1) + "\n")
print("wrote", out / "gpu_check.json", "with", ", ".join(gathered))
PY
step "done, status $status"
exit $status
