#!/usr/bin/env bash
# One screening run of the joint stage under the fixed protocol of docs/results.md: the
# demo's data, annotation VAE and real-data judge from one demo folder, the demo's joint preset plus one
# change, probes at fixed sample counts. One thread, so that two screens run side by side.
#   scripts/screen_joint.sh DEMO_DIR NAME SEED STEPS PROBE_EVERY [key=value ...]
#   e.g. scripts/screen_joint.sh runs/demo base 0 782 196                      (50k samples, a probe every 12.5k)
#        scripts/screen_joint.sh runs/demo sc 1 782 196 model.arch.self_condition=true
# Writes runs/screen/NAME-sSEED/ (metrics.jsonl holds the probe rows) and its log; compare with
#   python scripts/screen_table.py runs/screen/*-s*/
set -euo pipefail
cd "$(dirname "$0")/.."
demo=$1; name=$2; seed=$3; steps=$4; probe=$5; shift 5
mkdir -p runs/screen
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1} JODIFFUSION_PROGRESS_SECONDS=60
exec .venv/bin/jodiffusion train --preset demo data.name=folder "data.root=$demo/data" \
  "vae=$demo/vae/annotation_vae" "probe_segmenter=$demo/seg-real/segmenter" \
  "probe_every=$probe" "train.steps=$steps" "train.seed=$seed" train.save_every=100000 \
  cache_dir=runs/screen/cache "output_dir=runs/screen/$name-s$seed" "$@" > "runs/screen/$name-s$seed.log" 2>&1
