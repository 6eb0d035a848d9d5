#!/usr/bin/env bash
# Server throughput, DFlash on vs off (same server build, same prompts), and HTTP overhead vs the engine
# alone at c=1. Usage: TARGET=dir DRAFT=dir OUT=dir [NUM=32] [CONC=1,8,32] [NEW=256] [BLOCK=16] [COMPILE=1] \
#     bash scripts/serve_bench.sh      (BLOCK unset: adaptive block size; COMPILE=1: torch.compile the layers;
#     PASSES=2: time each server twice, the second pass on a server that has seen every shape; MODES="dflash ar";
#     SERVE_OPTS="--engine-thread": more `dflashkit serve` flags; LOCAL=0: skip the engine-alone reference)
set -u
: "${TARGET:?}" "${DRAFT:?}" "${OUT:?}"
NUM=${NUM:-32}; CONC=${CONC:-1,8,32}; NEW=${NEW:-256}; PORT=${PORT:-8011}; PASSES=${PASSES:-1}; MODES=${MODES:-"dflash ar"}
opts=(); [ -n "${BLOCK:-}" ] && opts+=(--block-size "$BLOCK"); [ -n "${COMPILE:-}" ] && opts+=(--compile)
dk() { python3 -m dflashkit.cli.main "$@"; }
for mode in $MODES; do
    extra=""; [ "$mode" = ar ] && extra="--no-speculative"
    python3 -m dflashkit.cli.main serve --model "$TARGET" --draft "$DRAFT" --port "$PORT" --max-batch 32 --max-length 1024 "${opts[@]}" \
        --log-level warning $extra ${SERVE_OPTS:-} > "$OUT/serve_$mode.log" 2>&1 &
    pid=$!
    python3 - "$PORT" <<'PY'
import sys, time, urllib.request
for _ in range(300):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/health", timeout=1); sys.exit(0)
    except Exception:
        time.sleep(1)
sys.exit("server did not start")
PY
    for pass in $(seq "$PASSES"); do
        dir="$OUT/serve_$mode"; [ "$pass" -gt 1 ] && dir="$OUT/serve_${mode}_pass$pass"
        dk bench --backend openai --base-url "http://127.0.0.1:$PORT" --dataset humaneval --num-prompts "$NUM" \
            --concurrency "$CONC" --max-new-tokens "$NEW" --output "$dir" --no-plots --no-progress
    done
    kill "$pid"; wait "$pid" 2>/dev/null
done
[ "${LOCAL:-1}" = 0 ] && exit 0
dk bench --backend local --model "$TARGET" --draft "$DRAFT" "${opts[@]}" --dataset humaneval --num-prompts "$NUM" \
    --concurrency 1 --max-new-tokens "$NEW" --max-length 1024 --output "$OUT/local" --no-plots --no-progress
