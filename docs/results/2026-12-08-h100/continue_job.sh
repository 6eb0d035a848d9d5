#!/usr/bin/env bash
# Run 9 (2026-12-08): continue the shipped drafter (run 5: 5 layers, ~15 M blocks) on freshly regenerated greedy
# answers to the same prompts (the ShareGPT package cut to 4 user turns), lr 6e-4 with a short warmup, and time
# the compile warm-up (WARM=auto) on a GPU for the first time. Both drafters are then scored by the same
# `dflashkit eval` commands on the CPU (fp32) on the held-out ShareGPT prompts, HumanEval and MT-Bench.
set -u
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 HF_DATASETS_OFFLINE=1
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
cd ~/repo
export PYTHONPATH=$HOME/m/site
T=$(cat ~/m/hfdir.txt); R=$HOME/res; W=/tmp/dflash-smollm2; mkdir -p "$R"
BASE=$PWD/src/dflashkit/assets/smollm2-135m-instruct-dflash-b16
TARGET=$T PROMPTS=$HOME/m/sg4.json OUT=$R WORK=$W DATAGEN_S=${DATAGEN_S:-330} TRAIN_S=${TRAIN_S:-720} \
  LAYERS=5 LR=6e-4 INIT_DRAFT=$BASE PHASES="datagen train" bash scripts/train_smollm2.sh
cp "$W/data/heldout.jsonl" "$R/"  # both drafters are scored on the CPU here (fp32): no device time
cp "$W/warm.log" "$R/" 2>/dev/null
(cd "$R/draft" && split -b 15M model.safetensors model.safetensors.part.)
echo JOBDONE
