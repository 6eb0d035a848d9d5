#!/usr/bin/env bash
# Final GPU check of the tree (no GGUF): CUDA-only tests, a greedy DFlash == AR check on the GPU through the
# CUDA-graph path (in the tests), and FlexAttention compile time cold vs warm (second process, on-disk caches).
set -u
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD/src:$PWD/.m/pyt
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
python -m pytest -q -p no:cacheprovider tests/engine/test_cuda_graphs.py tests/models/test_fast_path.py 2>&1 | tail -5 | tee $OUT/gpu_tests.txt
python - <<'PY'
import shutil, torch, random
from pathlib import Path
from transformers import AutoConfig, AutoModelForCausalLM
from dflashkit.training.shards import Row, write_shard, shard_path
cfg = AutoConfig.from_pretrained(".m/rt")
torch.manual_seed(0)
AutoModelForCausalLM.from_config(cfg).to(torch.bfloat16).save_pretrained("/tmp/rt")
for f in Path(".m/rt").iterdir():
    if f.name != "config.json":
        shutil.copy(f, "/tmp/rt/")
rng = random.Random(0)
out = Path("/tmp/syn"); out.mkdir(exist_ok=True)
rows = [Row([rng.randrange(15362) for _ in range(n)], int(n * 0.4)) for n in (rng.randint(200, 1152) for _ in range(1024))]
write_shard(shard_path(out, 0), rows, complete=True)
PY
for pass in cold warm; do
  s=$(date +%s.%N)
  python scripts/profile_train_step.py --target /tmp/rt --data /tmp/syn --batch-size 32 --anchors 128 --loss-vocab 15362 \
    --num-layers 5 --attention flex --max-len 1152 --steps 14 2>&1 | grep -v -i warn | tail -3
  echo "$pass process wall $(python -c "print(round($(date +%s.%N) - $s, 1))") s" | tee -a $OUT/compile_cache.txt
done
