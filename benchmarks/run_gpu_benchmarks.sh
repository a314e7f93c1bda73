#!/usr/bin/env bash
# All GPU figures of docs/benchmarks.md ("Joint denoiser: sampling" and "... training") in one command:
#
#     bash benchmarks/run_gpu_benchmarks.sh            # results in $OUT if set, else benchmarks/results/<date>
#
# Runs on one GPU, in this order (most important first), each in its own process with its own time limit,
# and never more than BENCH_BUDGET_S seconds in all (default 530, under 9 minutes on one H100):
#   1. sampling  unidiffuser-v1, 512 px: authors' pattern vs ours (50 steps, batch 8), ours at default
#                settings, eager and torch.compile'd                                     (<= 210 s)
#   2. training  unidiffuser-v1, batch 8, bf16 autocast, fused AdamW                      (<= 90 s)
#   3. training  the same with torch.compile                                              (<= 150 s)
#   4. sampling  base (256 px, CLIP-L text), batch 16                                     (<= 60 s)
#   5. training  base, batch 32                                                           (<= 60 s)
# A run that fails or times out is recorded as such; a sampling run cut short keeps the modes it measured.
# Writes <name>.json, <name>.log, status.tsv, env.txt and benchmarks_snippet.md (the markdown to paste).
# Environment: PYTHON (interpreter; default .venv/bin/python if present, else python3), OUT, BENCH_BUDGET_S.
set -u

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
OUT_DIR="${OUT:-$ROOT/benchmarks/results/$(date -u +%Y%m%d-%H%M%S)}"
BUDGET="${BENCH_BUDGET_S:-530}"
mkdir -p "$OUT_DIR"
printf 'name\tstatus\tseconds\n' > "$OUT_DIR/status.tsv"

{
    date -u
    "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda,
        torch.cuda.get_device_name() if torch.cuda.is_available() else "NO GPU")'
    command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit \
        --format=csv
} > "$OUT_DIR/env.txt" 2>&1
cat "$OUT_DIR/env.txt"

# run NAME LIMIT_S SCRIPT ARGS...: one benchmark process, within its limit and what is left of the budget.
run() {
    local name="$1" limit="$2" script="$3"
    shift 3
    local left=$((BUDGET - SECONDS))
    if [ "$left" -lt 30 ]; then
        printf '%s\tskipped (budget of %ss spent)\t0\n' "$name" "$BUDGET" >> "$OUT_DIR/status.tsv"
        echo "== $name: skipped, the budget is spent"
        return
    fi
    [ "$limit" -gt "$left" ] && limit="$left"
    echo "== $name (at most ${limit}s)"
    local start=$SECONDS
    timeout -k 10 "$limit" "$PY" "benchmarks/$script" "$@" --out "$OUT_DIR/$name.json" \
        > "$OUT_DIR/$name.log" 2>&1
    local rc=$?
    local status="ok"
    [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && status="timed out after ${limit}s"
    [ "$rc" -ne 0 ] && [ "$status" = "ok" ] && status="failed (exit $rc, see $name.log)"
    printf '%s\t%s\t%s\n' "$name" "$status" "$((SECONDS - start))" >> "$OUT_DIR/status.tsv"
    tail -n 12 "$OUT_DIR/$name.log"
}

run sampling_unidiffuser-v1 210 bench_denoiser.py --preset unidiffuser-v1 --device cuda --steps 50 --batch 8 --compile
run training_unidiffuser-v1 90 bench_training.py --preset unidiffuser-v1 --device cuda --batch 8
run training_unidiffuser-v1_compiled 150 bench_training.py --preset unidiffuser-v1 --device cuda --batch 8 --compile
run sampling_base 60 bench_denoiser.py --preset base --device cuda --steps 50 --batch 16
run training_base 60 bench_training.py --preset base --device cuda --batch 32

"$PY" - "$OUT_DIR" <<'EOF'
import csv
import json
import sys
from pathlib import Path

sys.path.insert(0, "benchmarks")
import bench_denoiser  # noqa: E402
import bench_training  # noqa: E402

out = Path(sys.argv[1])
status = {row["name"]: row for row in csv.DictReader((out / "status.tsv").open(), delimiter="\t")}
parts = [f"<!-- written by benchmarks/run_gpu_benchmarks.sh; environment: -->\n```\n{(out / 'env.txt').read_text()}```\n"]
for name, row in status.items():
    path = out / f"{name}.json"
    module = bench_denoiser if name.startswith("sampling") else bench_training
    note = f"\n(run status: {row['status']}, {row['seconds']} s)\n"
    if path.is_file():
        parts.append(module.markdown(json.loads(path.read_text())) + note)
    else:
        parts.append(f"### {name}\n\nNOT MEASURED: {row['status']}\n")
snippet = "\n".join(parts)
(out / "benchmarks_snippet.md").write_text(snippet)
print(snippet)
EOF
echo "results in $OUT_DIR ($SECONDS s in all)"
