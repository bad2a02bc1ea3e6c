#!/usr/bin/env bash
# Make the carry on a fresh checkout first: .venv/bin/python bench/gpu_prepare.py (prints the lists).
# bench/gpu_pretrain.py on a lent GPU machine (the device tool): carry .whl/ (cp312 wheels of
# fastai and friends) and .gpu/corpus/ (Gutenberg shards as they are); $OUT receives the packed
# bundle (fp16), its card, stats.json and log.txt. Arguments go to gpu_pretrain.py.
set -u
OUT=${OUT:-/tmp/gpu-out}
NAME=${BASE_NAME:-gutenberg-gpu}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
W=/tmp/gpu-pretrain
nvidia-smi -L
timeout -s INT -k 10 "${PRETRAIN_SECONDS:-100000}" python3 bench/gpu_pretrain.py --corpus .gpu/corpus \
    --workdir $W "$@" 2>&1 | tee "$OUT/log.txt"
cp $W/stats.json "$OUT/" 2>/dev/null
python3 bench/pack_default_base.py --workdir $W --name "$NAME" \
    --hw-note "on a lent NVIDIA H200 through the device tool (bench/gpu_pretrain.sh)" \
    2>&1 | tail -3 | tee -a "$OUT/log.txt"
cp "edge_tl/assets/$NAME.etlb" "edge_tl/assets/$NAME.card.md" "$OUT/" 2>/dev/null
ls -la "$OUT"
