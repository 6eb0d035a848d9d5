#!/usr/bin/env bash
# Server throughput, DFlash on vs off (same server build, same prompts), and HTTP overhead vs the engine
# alone at c=1. Usage: TARGET=dir DRAFT=dir OUT=dir [NUM=32] [CONC=1,8,32] [NEW=256] [BLOCK=16] [COMPILE=1] \
#     bash scripts/serve_bench.sh      (BLOCK unset: adaptive block size; COMPILE=1: torch.compile the layers)
set -u
: "${TARGET:?}" "${DRAFT:?}" "${OUT:?}"
NUM=${NUM:-32}; CONC=${CONC:-1,8,32}; NEW=${NEW:-256}; PORT=${PORT:-8011}
opts=(); [ -n "${BLOCK:-}" ] && opts+=(--block-size "$BLOCK"); [ -n "${COMPILE:-}" ] && opts+=(--compile)
dk() { python3 -m dflashkit.cli.main "$@"; }
for mode in dflash ar; do
    extra=""; [ "$mode" = ar ] && extra="--no-speculative"
    python3 -m dflashkit.cli.main serve --model "$TARGET" --draft "$DRAFT" --port "$PORT" --max-batch 32 --max-length 1024 "${opts[@]}" \
        --log-level warning $extra > "$OUT/serve_$mode.log" 2>&1 &
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
    dk bench --backend openai --base-url "http://127.0.0.1:$PORT" --dataset humaneval --num-prompts "$NUM" \
        --concurrency "$CONC" --max-new-tokens "$NEW" --output "$OUT/serve_$mode" --no-plots --no-progress
    kill "$pid"; wait "$pid" 2>/dev/null
done
dk bench --backend local --model "$TARGET" --draft "$DRAFT" "${opts[@]}" --dataset humaneval --num-prompts "$NUM" \
    --concurrency 1 --max-new-tokens "$NEW" --max-length 1024 --output "$OUT/local" --no-plots --no-progress
