#!/usr/bin/env bash
# CamVid reduced to car, pedestrian, bicyclist, sign_symbol (others -> background), SegFormer-B0
# from scratch, same budget and seed twice:
#   1. the recipe's default rare-class handling (sqrt-inverse CE weights, rare-class sampler,
#      cat_max_ratio 0.75 crops);
#   2. plain cross-entropy with uniform sampling and plain crops.
# Prints both test tables; BENCHMARKS.md records them. About 25-30 min per run on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 NO_ALBUMENTATIONS_UPDATE=1
SEGKIT=${SEGKIT:-.venv/bin/segkit}
OUT=${OUT:-bench/out}
RECIPE=recipes/camvid-4class-segformer.yaml

$SEGKIT train $RECIPE --output-dir "$OUT/camvid-default" --overwrite "$@"
$SEGKIT train $RECIPE --output-dir "$OUT/camvid-plain-ce" --overwrite \
  --set loss.class_weights=null --set train.sampler=uniform --set augment.cat_max_ratio=1.0 "$@"

for run in camvid-default camvid-plain-ce; do
  echo "== $run (test)"; cat "$OUT/$run/per_class.md"
done
