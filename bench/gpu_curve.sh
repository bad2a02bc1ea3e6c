#!/usr/bin/env bash
# Make the carry on a fresh checkout first: .venv/bin/python bench/gpu_prepare.py (prints the lists).
# bench/gpu_curve.py on a lent GPU machine (the device tool), several processes on one GPU.
# Carry .whl/ (cp312 wheels of fastai and friends), .gpu/imdb/ (train, test, unsup .csv.xz) and
# .gpu/keys/ (the bench home's device key). $OUT receives runs.tgz (each process's results
# folder and log, refreshed every 10 s, so a lease that ends early keeps what finished) and the
# encrypted shared LM in 15 MB parts. Join the folders here with bench/merge_compare.py.
set -u
OUT=${OUT:-/tmp/gpu-out}
T=${GPU_CURVE_SECONDS:-560}
start=$(date +%s)
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
W=/tmp/gpu-curve
mkdir -p $W/home/keys
cp .gpu/keys/* $W/home/keys/ && chmod 700 $W/home/keys && chmod 600 $W/home/keys/*
nvidia-smi -L
python3 bench/gpu_curve.py --prepare --imdb .gpu/imdb --home $W/home || exit 1
left=$((T - $(date +%s) + start))
echo "datasets ready; $left s left for the units"

launch() {  # launch NAME ARGS...: one compare process in the background
    local name=$1
    shift
    mkdir -p $W/runs/$name
    timeout -s INT -k 15 $left python3 bench/gpu_curve.py --imdb .gpu/imdb --home $W/home \
        --out $W/runs/$name --work $W/work/$name --seconds $left "$@" \
        >$W/runs/$name/log.txt 2>&1 &
}
# The critical chain first: the shared LM, then the largest transfer unit.
if [ "${GPU_CURVE_PLANS:-committed}" = seeds12 ]; then
    # What the committed curve still lacks: seeds 1-2 of transfer and scratch at
    # 10k / 20k (scratch in fp32: classifier_dtype's rule). Only units not already in
    # compare-semi-gpu: the merge refuses a unit that two folders hold differently. The LM is
    # made again, bit for bit the same as the committed one's (same data, seed and device kind).
    launch lm --workers 12 --defer-ensemble 10000 --plan 20000:1:transfer
    launch transfer20k --workers 2 --lm-from $W/work/lm --defer-ensemble 10000 \
        --plan 20000:2:transfer
    launch transfer10k --workers 2 --lm-from $W/work/lm --defer-ensemble 10000 \
        --plan 10000:1,2:transfer
    launch scratch20k --plan 20000:1:scratch
    launch scratch20k2 --plan 20000:2:scratch
    launch scratch --plan 10000:1,2:scratch
    launch tfidf --threads 1 --plan 10000:2:tfidf --plan 20000:1,2:tfidf
else  # the committed curve's run, as it was
    launch lm --workers 12 --defer-ensemble 10000 --plan 20000:0:transfer
    launch scratch20k --plan 20000:0:scratch
    launch scratch --plan 2500,5000,10000:0:scratch --plan 500,1000:0:scratch
    launch transfer --workers 4 --lm-from $W/work/lm --defer-ensemble 10000 \
        --plan 10000:0:transfer --plan 5000:1,2:transfer --plan 500,1000:0:transfer
    launch tfidf --threads 1 --plan 10000,20000:0:tfidf --plan 5000:1,2:tfidf \
        --plan 10000,20000:1,2:tfidf
fi

send() {
    tar czf "$OUT/runs.tgz.tmp" -C $W runs 2>/dev/null && mv "$OUT/runs.tgz.tmp" "$OUT/runs.tgz"
    if [ ! -f "$OUT/semi-lm.age.part00" ] && [ -f $W/work/lm/semi-lm.age ]; then
        split -b 15000000 -d $W/work/lm/semi-lm.age "$OUT/semi-lm.age.part"
    fi
}
while [ -n "$(jobs -r)" ]; do
    sleep 10
    send
    echo "$(($(date +%s) - start)) s: $(grep -h '^\[' $W/runs/*/log.txt 2>/dev/null | wc -l) units done"
done
send
grep -h '^\[\|Error\|error' $W/runs/*/log.txt | head -60
ls -la "$OUT"
