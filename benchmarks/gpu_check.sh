#!/usr/bin/env bash
# The GPU paths of the training program, on a lent GPU machine (see benchmarks/README.md):
# a full job with amp=auto (bf16) + channels_last, a fp16 job (GradScaler), and the
# throughput benchmark. Wheels for the toolkit travel in .whl/ (the machine is offline).
# Usage there: bash benchmarks/gpu_check.sh OUT_DIR [all|train|serve]
set -uo pipefail
OUT=${1:-/tmp/gpu_check}; mkdir -p "$OUT"; PART=${2:-all}
SITE=/tmp/site; mkdir -p $SITE
for wheel in .whl/*.whl; do python3 -m zipfile -e "$wheel" $SITE; done
export PYTHONPATH=$PWD/container_src:$PWD:$SITE PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, torchvision, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'torchvision', torchvision.__version__, 'cpus', __import__('os').cpu_count())"
if [ "$PART" = serve ] || [ "$PART" = all ]; then
  echo "== serving model path"; python3 benchmarks/serve_batch_path.py 2>&1 | tee "$OUT/serve.log"
fi
[ "$PART" = serve ] && exit 0
python3 -m dogbreed.sample_data /tmp/data --classes 10 --images-per-class 100 --seed 0

job() {  # job NAME JSON_HYPERPARAMETERS
  python3 -c "import json,sys; from launcher.job_dir import prepare_training_dir as p; p('/tmp/$1', json.loads(sys.argv[1]), {c: '/tmp/data/'+c for c in ('train','valid','test')})" "$2"
  SAGEMAKER_BASE_DIR=/tmp/$1 python3 -m dogbreed.train > "$OUT/$1.log" 2>&1
  echo "== $1: exit $?"; grep -E "^(device|epoch=|test_|WARNING|ERROR)" "$OUT/$1.log"
  python3 -c "import json; d=json.load(open('/tmp/$1/model/model.json')); print('model.json training:', d['training'])" 2>&1 | tail -1
}
job bf16_all '{"epochs": 3, "batch-size": 64, "image-size": 224, "pretrained": "none", "trainable": "all", "lr": 0.001, "patience": 0}'
job fp16_layer4 '{"epochs": 2, "batch-size": 64, "image-size": 224, "pretrained": "none", "trainable": "layer4", "amp": "fp16"}'
job fp32_fc '{"epochs": 1, "batch-size": 64, "image-size": 224, "pretrained": "none", "trainable": "fc", "amp": "off"}'
for trainable in fc layer4 all; do
  echo "== benchmark trainable=$trainable"
  python3 benchmarks/train_throughput.py --trainable $trainable --batch-size 64 --images 2048 --rounds 4 --compile 2>&1 | tee "$OUT/bench_$trainable.log"
done
