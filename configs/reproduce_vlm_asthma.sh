#!/usr/bin/env bash
# Reproduce the embedded VLM steth/vlm-asthma and its comparison (issue 17, docs/vlm.md), in one command:
#
#   bash configs/reproduce_vlm_asthma.sh
#
# 1. import KAUH and ICBHI and merge them (as configs/reproduce_efficientat_asthma.sh does);
# 2. patient-grouped 5-fold cross-validation with fold seeds $SEEDS (the folds of the kept
#    efficientat-asthma reports), of the VLM with the patient facts in its prompt (configs/vlm-asthma.yaml,
#    with the MFCC baseline on the same folds) and without them (configs/vlm-asthma-nofacts.yaml);
# 3. the final model on every patient (no validation split) for the recipe's 3 epochs, its threshold the
#    maximum Youden's J of the first fold seed's out-of-fold recording probabilities (steth train --evaluation);
#    EfficientAT's licence beside the weights; configs/vlm_table.py records the comparison; the card.
#
# Environment: STETH_HUB_SHARED_DATA (default ../shared/data/lung-sounds), STETH_HUB_SHARED_MODELS
# (default ../shared/models), WORK (default runs/vlm-asthma), OUT (default $WORK/model;
# OUT=steth_hub/models/vlm-asthma replaces the shipped model), SEEDS (default "0 1 2"), STETH (default: steth
# on PATH, else .venv/bin/steth). About 25 minutes per fold seed on 2 busy CPU cores (the two configs side by side).
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${STETH_HUB_SHARED_DATA:-../shared/data/lung-sounds}
MODELS=${STETH_HUB_SHARED_MODELS:-../shared/models}
WORK=${WORK:-runs/vlm-asthma}
OUT=${OUT:-$WORK/model}
SEEDS=${SEEDS:-0 1 2}
STETH=${STETH:-$(command -v steth || echo .venv/bin/steth)}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
if [ ! -f "$MODELS/efficientat-mn04-as/model.safetensors" ]; then
  echo "needs the EfficientAT mn04 encoder in $MODELS/efficientat-mn04-as/ (see configs/README.md)" >&2; exit 2
fi

"$STETH" corpus import kauh "$SHARED/kauh" "$WORK/corpora/kauh" --quiet
"$STETH" corpus import icbhi "$SHARED/icbhi" "$WORK/corpora/icbhi" --quiet
"$STETH" corpus merge "$WORK/corpora/all" "$WORK/corpora/kauh" "$WORK/corpora/icbhi" --quiet
for S in $SEEDS; do
  "$STETH" evaluate --config configs/vlm-asthma.yaml --corpus "$WORK/corpora/all" --out "$WORK/eval/seed$S/vlm-asthma" \
      --folds 5 --seed "$S" --overwrite &
  "$STETH" evaluate --config configs/vlm-asthma-nofacts.yaml --corpus "$WORK/corpora/all" --no-baseline \
      --out "$WORK/eval/seed$S/vlm-asthma-nofacts" --folds 5 --seed "$S" --overwrite &
  wait
done
SEED=${SEEDS%% *}
"$STETH" train --config configs/vlm-asthma.yaml --corpus "$WORK/corpora/all" --out "$OUT" --valid-fraction 0 --epochs 3 \
    --evaluation "$WORK/eval/seed$SEED/vlm-asthma/evaluation.json" --name steth/vlm-asthma \
    --checkpoints "$WORK/checkpoints" --quiet
cp "$MODELS/efficientat-mn04-as/LICENSE" "$OUT/LICENSE-pretrained"
.venv/bin/python configs/vlm_table.py "$WORK/eval" --seed $SEEDS --model-dir "$OUT"
"$STETH" card "$OUT"
echo "model: $OUT   evaluations: $WORK/eval/seed$SEED/"
