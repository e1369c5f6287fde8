#!/usr/bin/env bash
# Trains LR, GAMENet and SafeDrug on one dataset and evaluates them together (SafeDrug's protocol:
# 10 bootstrap rounds of 80% of the test patients), with most-frequent drugs as the reference.
#
#   experiments/baselines/run.sh DATASET_DIR OUT_DIR [CONFIG_PREFIX]
#
# CONFIG_PREFIX selects experiments/baselines/configs/<prefix>_<model>.yaml (e.g. "mimic3");
# without it the BaselineConfig defaults are used (the synthetic-cohort table).
set -euo pipefail
data=${1:?usage: run.sh DATASET_DIR OUT_DIR [CONFIG_PREFIX]}
out=${2:?usage: run.sh DATASET_DIR OUT_DIR [CONFIG_PREFIX]}
prefix=${3:-}
here=$(cd "$(dirname "$0")" && pwd)
flame=${FLAME_JAX:-flame-jax}
runs=()
for model in lr gamenet safedrug; do
  config=()
  if [[ -n "$prefix" ]]; then config=(--config "$here/configs/${prefix}_${model}.yaml"); fi
  "$flame" baseline train --model "$model" --data "$data" --out "$out/$model" --overwrite --quiet \
    "${config[@]}"
  runs+=(--run "$out/$model")
done
"$flame" baseline eval "${runs[@]}" --reference --split test --rounds 10 --out "$out/table" --overwrite
