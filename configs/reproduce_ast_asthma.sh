#!/usr/bin/env bash
# Reproduce the embedded model steth/ast-asthma from the shared recordings, in one command:
#
#   bash configs/reproduce_ast_asthma.sh
#
# 1. import KAUH and ICBHI with the corpus importers and merge them (duplicates, conflicts and
#    patient folds are handled there);
# 2. 5-fold patient-grouped cross-validation of RECIPE (default configs/ast-asthma-distilled.yaml:
#    the tiny AST taught by the frozen EfficientAT probe, which needs ../shared/models) on fold seeds
#    1 and 2 with the MFCC baseline beside it (steth evaluate --folds 5 --seed S): the numbers for
#    the model card, and honest out-of-fold predictions;
# 3. the final model on every patient (steth train --valid-fraction 0), on the recipe's schedule
#    stopped at fold seed 1's median best epoch, with the threshold at the maximum Youden's J of its
#    pooled out-of-fold recording probabilities; the evaluation report goes into its steth.json.
#    Then configs/README.md ("The distilled-AST outcome") for the card's limitations.
#
# Environment: STETH_HUB_SHARED_DATA (default ../shared/data/lung-sounds), WORK (default
# runs/ast-asthma), OUT (default runs/ast-asthma/model; OUT=steth_hub/models/ast-asthma replaces
# the shipped model, then see configs/README.md for the card), STETH (default: steth on PATH,
# else .venv/bin/steth), OMP_NUM_THREADS (default 1: this small model trains up to ten times
# faster on one thread than on two busy cores), RECIPE (default configs/ast-asthma-distilled.yaml;
# configs/ast-asthma.yaml is the earlier AST without a teacher). About 80 minutes on 2 busy CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${STETH_HUB_SHARED_DATA:-../shared/data/lung-sounds}
WORK=${WORK:-runs/ast-asthma}
OUT=${OUT:-$WORK/model}
STETH=${STETH:-$(command -v steth || echo .venv/bin/steth)}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
RECIPE=${RECIPE:-configs/ast-asthma-distilled.yaml}

"$STETH" corpus import kauh "$SHARED/kauh" "$WORK/corpora/kauh" --quiet
"$STETH" corpus import icbhi "$SHARED/icbhi" "$WORK/corpora/icbhi" --quiet
"$STETH" corpus merge "$WORK/corpora/all" "$WORK/corpora/kauh" "$WORK/corpora/icbhi" --quiet
for S in 1 2; do
  "$STETH" evaluate --config "$RECIPE" --corpus "$WORK/corpora/all" --out "$WORK/eval/seed$S" --folds 5 --seed "$S" \
      --overwrite
done
"$STETH" train --config "$RECIPE" --corpus "$WORK/corpora/all" --out "$OUT" \
    --valid-fraction 0 --evaluation "$WORK/eval/seed1/evaluation.json" --name steth/ast-asthma \
    --checkpoints "$WORK/checkpoints" --quiet
echo "model: $OUT   evaluations: $WORK/eval/seed*/evaluation.json"
