#!/usr/bin/env bash
# Run 7: more distinct answers. Up to 16 user turns (prompts16: 50,051 turns) and prompts up to 1,280 tokens
# (run 3's data skipped 7,103 turns over 768); 5 layers, FlexAttention, run 5's optimiser (the sweep of
# 2026-11-25 found lr 1.2e-3 and 32 x 128 best at a short horizon).
set -u
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 HF_DATASETS_OFFLINE=1
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
cd ~/repo
export PYTHONPATH=$HOME/repo/src:/tmp/site
T=$(cat ~/m/hfdir.txt); R=$HOME/res4; mkdir -p $R
TARGET=$T PROMPTS=$HOME/m/prompts16.jsonl OUT=$R WORK=/tmp/dflash-smollm2 DATAGEN_S=${DATAGEN_S:-500} TRAIN_S=${TRAIN_S:-820} \
  LAYERS=5 TURNS=16 MAX_PROMPT=1280 MAX_LEN=1664 EVAL_EVERY=0 EVAL_PROMPTS=80 PHASES="datagen train" bash scripts/train_smollm2.sh
echo TRAINDONE
sleep 20
TARGET=$T OUT=$R WORK=/tmp/dflash-smollm2 EVAL_PROMPTS=80 PHASES=eval bash scripts/train_smollm2.sh 2>&1 | grep -v -i warn | tail -4
echo JOBDONE
