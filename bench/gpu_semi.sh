#!/usr/bin/env bash
# Make the carry on a fresh checkout first: .venv/bin/python bench/gpu_prepare.py (prints the lists).
# bench/gpu_semi.py on a lent GPU machine (the device tool): carry .whl/ (fastai and friends, cp312
# wheels) and .gpu/ (imdb/*.csv.xz and the bench home's keys/); $OUT receives results.json,
# table.md, log.txt and the encrypted shared LM in 15 MB parts (cat them back together).
set -u
OUT=${OUT:-/tmp/gpu-out}
T=${GPU_SEMI_SECONDS:-540}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
W=/tmp/gpu-semi
mkdir -p $W/home/keys $W/work $W/out
cp .gpu/keys/* $W/home/keys/ && chmod 700 $W/home/keys && chmod 600 $W/home/keys/*
nvidia-smi -L

send() {
    if [ ! -f "$OUT/semi-lm.age.part00" ] && [ -f $W/work/semi-lm.age ]; then
        split -b 15000000 -d $W/work/semi-lm.age "$OUT/semi-lm.age.part"
    fi
    cp $W/out/results.json $W/out/table.md "$OUT/" 2>/dev/null
}
(while sleep 5; do send; done) &
watcher=$!
timeout -s INT -k 20 "$T" python3 bench/gpu_semi.py --imdb .gpu/imdb --home $W/home \
    --out $W/out --work $W/work "$@" 2>&1 | tee "$OUT/log.txt"
kill $watcher 2>/dev/null
send
ls -la "$OUT"
