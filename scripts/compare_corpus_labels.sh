#!/usr/bin/env bash
# One GPU job (~24 minutes on one H100): does adding a corpus's own answers, learned through the target's own
# labels, beat the target's greedy answers alone at the same training time? One datagen (the GPU answers; the
# CPU writes the corpus rows meanwhile), then two training runs of TRAIN_S each, same everything else:
#   A: the target's greedy answers only (labels = the data's, as the shipped drafter)
#   B: the same answers + the corpus's answers (labels = the target's greedy chain)
# and tau on held-out ShareGPT, HumanEval and MT-Bench for both. Results: $OUT/A, $OUT/B (drafters, logs, tau) and
# one small report, $REPORT (default $OUT/compare.txt): both summaries and both runs' last log lines.
#
#   TARGET=/path/to/SmolLM2-135M-Instruct PROMPTS=sharegpt|file OUT=runs/cmp bash scripts/compare_corpus_labels.sh
# On the lent GPU, keep the drafters out of the returned folder: REPORT=$OUT/compare.txt OUT=/tmp/cmp bash ...
set -uo pipefail
TARGET=${TARGET:?set TARGET to a local transformers directory of SmolLM2-135M-Instruct}
OUT=${OUT:-runs/compare-corpus}
WORK=${WORK:-/tmp/dflash-smollm2}
TRAIN_S=${TRAIN_S:-420}
EVAL_PROMPTS=${EVAL_PROMPTS:-80}
REPORT=${REPORT:-$OUT/compare.txt}
export TARGET OUT WORK EVAL_PROMPTS
here=$(cd "$(dirname "$0")" && pwd)

CORPUS=1 PHASES=datagen OUT="$OUT" bash "$here/train_smollm2.sh" || exit 1
for arm in A B; do
    corpus=$([[ $arm == B ]] && echo 1 || echo 0)
    CORPUS=$corpus PHASES="train eval" TRAIN_S=$TRAIN_S RUN="$WORK/run_$arm" OUT="$OUT/$arm" \
        bash "$here/train_smollm2.sh" 2>&1 | grep -v -i warn | tail -6
done
for arm in A B; do
    echo "== $arm"
    cat "$OUT/$arm/summary.txt" 2>/dev/null
    grep -v '"event"' "$OUT/$arm/log.jsonl" 2>/dev/null | tail -2 || true  # the last training log lines
done | tee "$REPORT"
