#!/usr/bin/env bash
# Issue 8's long fits on the lent GPU machine, in one device-tool call from the repo root:
#
#   run(command="bash plans/active/FIX-PYTORCH-FORWARD-PARITY-001/gpu_quality_study.sh", timeout_s=600)
#
# The machine's python3 has torch (CUDA), numpy, scipy and matplotlib, which is all that
# `runners.bench_quality --backend pytorch` imports (no Hydra, MLflow or TensorFlow; cdtools is
# missing there, so the iterative column says n/a). Four studies (dataset x gridsize) share the
# one GPU, each under a time limit; each rewrites its quality.json after every run, so the runs
# that finished come back under $OUT even when the limit cuts a study short ("complete": false).
# Settings by environment: EPOCHS (50: with the study's default of a group seeded at every one of the
# 1536 training positions, the steps of 200 epochs of the 384 groups used before round 11), SEEDS (5), LOSS (poisson_nll or diffraction_mae),
# LIMIT (seconds per study, 480), DEVICE (cuda), N_IMAGES (2048: the network learns the amplitude
# from how much of the object the training positions cover; findings round 7).
set -u
EPOCHS=${EPOCHS:-50} SEEDS=${SEEDS:-5} LOSS=${LOSS:-poisson_nll} LIMIT=${LIMIT:-480} DEVICE=${DEVICE:-cuda} N_IMAGES=${N_IMAGES:-2048}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 MPLBACKEND=Agg
OUT=${OUT:-/tmp/gpu_quality_out}
mkdir -p "$OUT"
nvidia-smi -L || true
for dataset in simulated lines; do
  for gridsize in 1 2; do
    timeout "$LIMIT" python3 -m runners.bench_quality --device "$DEVICE" --datasets "$dataset" \
      --gridsizes "$gridsize" --seeds "$SEEDS" --epochs "$EPOCHS" --loss "$LOSS" --n-images "$N_IMAGES" --threads 4 \
      --out "/tmp/quality_${dataset}_gs${gridsize}" > "$OUT/log_${dataset}_gs${gridsize}.txt" 2>&1 &
  done
done
wait
for dataset in simulated lines; do
  for gridsize in 1 2; do
    cp "/tmp/quality_${dataset}_gs${gridsize}/quality.json" "$OUT/quality_${dataset}_gs${gridsize}.json" || true
  done
done
