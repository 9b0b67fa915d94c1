#!/usr/bin/env bash
# Reproduce the default screening model steth/efficientat-asthma from the shared recordings and the
# AudioSet-pretrained EfficientAT mn04 encoder, in one command:
#
#   bash configs/reproduce_efficientat_asthma.sh
#
# 1. import KAUH and ICBHI and merge them (duplicates, conflicts, patient folds: the importers);
# 2. the comparisons of configs/README.md ("Pretrained encoders"): patient-grouped 5-fold
#    cross-validation with fold seeds 0, 1 and 2 of the frozen probe (efficientat-probe), the
#    fine-tuned model (efficientat-asthma, the default), the same with a common noise floor
#    (efficientat-asthma-floor, shipped beside it) and the floor with noisy copies
#    (efficientat-asthma-robust, a trial the rules did not ship), the MFCC baseline on the same folds
#    beside them; every report goes to $WORK/eval/seedS/;
# 3. the final model of RECIPE (default efficientat-asthma; RECIPE=efficientat-asthma-floor
#    NAME=steth/efficientat-asthma-floor for the other shipped one) on every patient (no validation
#    split), for the recipe's epochs, threshold at the maximum Youden's J of its fold-seed-0
#    out-of-fold recording probabilities, that evaluation stored in its steth.json; the EfficientAT
#    licence beside the weights; the ONNX export (steth export) for the light runtime; the card.
#
# Environment: STETH_HUB_SHARED_DATA (default ../shared/data/lung-sounds), STETH_HUB_SHARED_MODELS
# (default ../shared/models), WORK (default runs/efficientat-asthma), OUT (default $WORK/model;
# OUT=steth_hub/models/efficientat-asthma replaces the shipped model), SEEDS (default "0 1 2"),
# STETH (default: steth on PATH, else .venv/bin/steth). About 3 hours on 2 busy CPU cores
# (the fine-tuning dominates: about 2 minutes per fold).
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${STETH_HUB_SHARED_DATA:-../shared/data/lung-sounds}
MODELS=${STETH_HUB_SHARED_MODELS:-../shared/models}
WORK=${WORK:-runs/efficientat-asthma}
OUT=${OUT:-$WORK/model}
SEEDS=${SEEDS:-0 1 2}
RECIPE=${RECIPE:-efficientat-asthma}
NAME=${NAME:-steth/$RECIPE}
STETH=${STETH:-$(command -v steth || echo .venv/bin/steth)}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
if [ ! -f "$MODELS/efficientat-mn04-as/model.safetensors" ]; then
  echo "needs the EfficientAT mn04 encoder in $MODELS/efficientat-mn04-as/ (see configs/README.md)" >&2; exit 2
fi

"$STETH" corpus import kauh "$SHARED/kauh" "$WORK/corpora/kauh" --quiet
"$STETH" corpus import icbhi "$SHARED/icbhi" "$WORK/corpora/icbhi" --quiet
"$STETH" corpus merge "$WORK/corpora/all" "$WORK/corpora/kauh" "$WORK/corpora/icbhi" --quiet
for S in $SEEDS; do
  "$STETH" evaluate --config configs/efficientat-probe.yaml --config configs/efficientat-asthma.yaml \
      --config configs/efficientat-asthma-floor.yaml --config configs/efficientat-asthma-robust.yaml \
      --corpus "$WORK/corpora/all" --out "$WORK/eval/seed$S" --folds 5 --seed "$S" --overwrite
done
FIRST=${SEEDS%% *}
"$STETH" train --config "configs/$RECIPE.yaml" --corpus "$WORK/corpora/all" --out "$OUT" \
    --valid-fraction 0 --epochs 6 --evaluation "$WORK/eval/seed$FIRST/$RECIPE/evaluation.json" \
    --name "$NAME" --checkpoints "$WORK/checkpoints" --quiet
cp "$MODELS/efficientat-mn04-as/LICENSE" "$OUT/LICENSE-pretrained"
"$STETH" export "$OUT"
.venv/bin/python configs/encoder_table.py "$WORK/eval" --model-dir "$OUT"   # the comparison, into steth.json
"$STETH" card "$OUT"
echo "model: $OUT   evaluations: $WORK/eval/seed*/"
