#!/usr/bin/env bash
# Make the carry on a fresh checkout first: .venv/bin/python bench/gpu_prepare.py (prints the lists).
# The model-size ablation on a lent GPU (the device tool), in one call: pretrain a base of
# SIZE (default medium: 30k vocab, emb 300, hidden 800, 3 layers) on one Gutenberg shard for
# PRETRAIN_MINUTES, pack it, then run the semi curve with it exactly as
# bench/results/compare-semi-gpubase ran the small GPU base (`flat10`, the 30k-text LM: 25k train
# reviews + 5,000 unlabelled), 500 / 1k / 2.5k / 5k, seed 0, one process per size.
#
# Carry (61 MB with the repo): .whl, .gpu/imdb/train.csv.xz, .gpu/imdb/test.csv.xz, .gpu/unsup5k
# (the 5,000 unlabelled reviews compare_imdb.ensure_datasets(5000) samples, in its order, so the
# dataset fingerprint matches this CPU's imdb-unsup-5000), .gpu/corpus/gutenberg_train_00.jsonl.xz,
# .gpu/corpus/gutenberg_valid.jsonl.xz, .gpu/keys. $OUT receives runs.tgz (results, logs,
# pretraining stats, the card) every 10 s and the bundle in 15 MB parts.
set -u
PY=${PY:-python3}
OUT=${OUT:-/tmp/gpu-out}
T=${GPU_SIZE_SECONDS:-560}
SIZE=${SIZE:-medium}
NAME=gutenberg-$SIZE
start=$(date +%s)
mkdir -p "$OUT"
[ -n "${SKIP_WHEELS:-}" ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
W=/tmp/gpu-size
mkdir -p $W/home/keys $W/imdb $W/corpus $W/runs/pretrain
cp .gpu/keys/* $W/home/keys/ && chmod 700 $W/home/keys && chmod 600 $W/home/keys/*
cp .gpu/imdb/train.csv.xz .gpu/imdb/test.csv.xz .gpu/unsup5k/unsup.csv.xz $W/imdb/
cp .gpu/corpus/gutenberg_*.jsonl.xz $W/corpus/
nvidia-smi -L

send() {
    tar czf "$OUT/runs.tgz.tmp" -C $W runs 2>/dev/null && mv "$OUT/runs.tgz.tmp" "$OUT/runs.tgz"
}
(while sleep 10; do send; done) &
sender=$!

timeout -s INT -k 10 $((T - 240)) $PY bench/gpu_pretrain.py --corpus $W/corpus \
    --workdir $W/pt --minutes "${PRETRAIN_MINUTES:-2.5}" --words 12000000 --device "${DEVICE:-cuda}" \
    --config "{\"size\": \"$SIZE\"}" 2>&1 | tee $W/runs/pretrain/log.txt
$PY bench/pack_default_base.py --workdir $W/pt --name "$NAME" \
    --hw-note "on a lent NVIDIA H200 through the device tool (bench/gpu_size.sh)" \
    2>&1 | tail -4 | tee -a $W/runs/pretrain/log.txt
cp $W/pt/stats.json "edge_tl/assets/$NAME.card.md" $W/runs/pretrain/ 2>/dev/null
split -b 15000000 -d "edge_tl/assets/$NAME.etlb" "$OUT/$NAME.etlb.part" || exit 1
# pack_default_base put the bundle in edge_tl/assets/ and pinned it: a built-in base from here on
$PY bench/gpu_curve.py --prepare --imdb $W/imdb --home $W/home --unsup-rows 5000 || exit 1
left=$((T - $(date +%s) + start))
echo "base $NAME packed; $left s left for the curve"

pids=()
launch() {  # launch NAME ARGS...: one compare process in the background
    local name=$1
    shift
    mkdir -p $W/runs/$name
    timeout -s INT -k 15 $left $PY bench/gpu_curve.py --imdb $W/imdb --home $W/home \
        --base "$NAME" --unsup-rows 5000 --out $W/runs/$name --work $W/work/$name \
        --seconds $left "$@" >$W/runs/$name/log.txt 2>&1 &
    pids+=($!)
}
launch lm --workers 12 --plan "${LM_SIZE:-2500}:0:transfer"
for n in ${SIZES:-500 1000 5000}; do
    launch t$n --lm-from $W/work/lm --plan $n:0:transfer
done
for p in "${pids[@]}"; do
    while kill -0 "$p" 2>/dev/null; do
        sleep 10
        echo "$(($(date +%s) - start)) s: $(grep -h '^\[' $W/runs/*/log.txt 2>/dev/null | wc -l) units done"
    done
done
kill $sender 2>/dev/null
send
grep -h '^\[\|Error\|perplexity' $W/runs/*/log.txt | head -40
ls -la "$OUT"
