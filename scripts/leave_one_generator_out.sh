#!/usr/bin/env bash
# Leave-one-generator-out: train on one synthetic generator, evaluate on 20 held-out cases of the others:
# phantom -> shapes, phantom -> thorax (the shipped weights' training) and shapes -> phantom.
# Usage: bash scripts/leave_one_generator_out.sh [OUT]   (default runs/logo; about 80 minutes on 2 CPU cores)
# Its first training is the shipped weights' run (README, Weights); the evaluations use held-out seeds.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/logo}
GP=.venv/bin/gastric-propagate
STEPS=(--proposer-steps "${PROPOSER_STEPS:-3000}" --refiner-steps "${REFINER_STEPS:-1000}" --validation-phantoms 0)
METHODS=(--methods proposer networks engine copy_slice registration registration_demons grow_from_seeds --variants largest --cases 20)
$GP train --phantoms 150 --out "$OUT/train-phantom" --overwrite "${STEPS[@]}"
$GP train --shapes 150 --out "$OUT/train-shapes" --overwrite "${STEPS[@]}"
$GP evaluate --generator shapes --out "$OUT/trained-on-phantom-tested-on-shapes" "${METHODS[@]}" \
    --proposer "$OUT/train-phantom/proposer.pt" --refiner "$OUT/train-phantom/refiner.pt"
$GP evaluate --generator thorax --out "$OUT/trained-on-phantom-tested-on-thorax" "${METHODS[@]}" \
    --proposer "$OUT/train-phantom/proposer.pt" --refiner "$OUT/train-phantom/refiner.pt"
$GP evaluate --generator phantom --out "$OUT/trained-on-shapes-tested-on-phantom" "${METHODS[@]}" \
    --proposer "$OUT/train-shapes/proposer.pt" --refiner "$OUT/train-shapes/refiner.pt"
for d in "$OUT"/trained-on-*; do echo "== $d"; sed -n '/^## Annotation: largest/,/^### Dice by case group/p' "$d/summary.md"; done
