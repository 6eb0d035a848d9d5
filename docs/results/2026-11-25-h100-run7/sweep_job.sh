#!/usr/bin/env bash
# Sweep (2026-11-25 third session): run 3's data once, then short 5-layer runs (sdpa: no compile cost) that differ
# in lr and batch shape. Each run stays inside its first epoch (~650 steps x 32 rows < 27.5k rows), so the log's
# training proxies (tau_h, acc_k) are measured on answers the drafter had not seen yet; plus the engine's tau on
# the 32 held-out prompts at the end of each run.
set -u
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 HF_DATASETS_OFFLINE=1
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
cd ~/repo
export PYTHONPATH=$HOME/repo/src:/tmp/site
T=$(cat ~/m/hfdir.txt); R=$HOME/res4; mkdir -p $R
TARGET=$T PROMPTS=$HOME/m/prompts.jsonl OUT=$R WORK=/tmp/dflash-smollm2 DATAGEN_S=450 PHASES=datagen \
  bash scripts/train_smollm2.sh
S=${SWEEP_S:-170}
for cfg in "A 1.2e-3 32 128" "B 2.4e-3 32 128" "C 4.8e-3 32 128" "D 2.4e-3 16 256"; do
  set -- $cfg
  TARGET=$T OUT=$R/sweep_$1 WORK=/tmp/dflash-smollm2 RUN=/tmp/dflash-smollm2/run_$1 PHASES=train TRAIN_S=$S \
    LAYERS=5 ATTENTION=sdpa LR=$2 BATCH=$3 ANCHORS=$4 bash scripts/train_smollm2.sh 2>&1 | grep -v -i warn | tail -4
  rm -rf $R/sweep_$1/draft
  echo "SWEEP $1 done"
done
echo JOBDONE
