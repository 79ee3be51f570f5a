#!/usr/bin/env bash
# The real-CT training experiment of docs/training.md (candidate B): split ../shared/real-ct-train by patient,
# fine-tune the bundled weights on its training side mixed with synthetic phantoms and lung nodules, and score the
# result against the bundled weights on the validation patients and on synthetic dev cases. About 25 minutes of
# training and 10 of evaluation on 2 CPU cores. Writes runs/real-ct-training/.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/real-ct-train}
OUT=runs/real-ct-training
GP=.venv/bin/gastric-propagate
.venv/bin/python scripts/split_by_patient.py --data "$DATA" --out "$OUT/split" --validation 0.15 --seed 0
$GP train --data "$OUT/split/train" --phantoms 100 --thorax 60 --mix train=0.5 phantom=0.35 thorax=0.15 \
    --zoom 0.8 2 --init bundled --learning-rate 5e-4 --proposer-steps 1500 --refiner-steps 600 \
    --validation-phantoms 0 --out "$OUT/weights" --overwrite
for weights in bundled tuned; do
    if [ "$weights" = tuned ]; then W=(--proposer "$OUT/weights/proposer.pt" --refiner "$OUT/weights/refiner.pt"); else W=(); fi
    $GP evaluate --data "$OUT/split/validation" --out "$OUT/validation-$weights" --variants largest \
        --methods engine networks registration_demons copy_slice "${W[@]}" --overwrite
    for generator in phantom thorax; do
        $GP evaluate --generator "$generator" --seed-start 1000000 --cases 20 --out "$OUT/dev-$generator-$weights" \
            --variants largest --methods engine networks "${W[@]}" --overwrite
    done
done
