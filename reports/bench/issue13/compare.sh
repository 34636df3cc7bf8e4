#!/usr/bin/env bash
# Behaviour-preserving refactor check (issue 13): `bench train` and `bench gateway` of a
# baseline commit and of this checkout, interleaved (base, new, base, new, ...) on the same
# machine, data and bundles.  Writes raw JSON per round under $OUT and summary.md.
#
#   reports/bench/issue13/compare.sh BASE_REV BINARY_BUNDLE RATING_BUNDLE [ROUNDS]
#
# The baseline runs from a git worktree of BASE_REV with this checkout's .venv (before the
# single namespace its modules were top-level `training`, `serving`, ... so PYTHONPATH and
# `python -m training.cli` reach it without reinstalling anything).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../../.." && pwd)"
BASE_REV="$1"; BINARY="$2"; RATING="$3"; ROUNDS="${4:-3}"
OUT="${OUT:-$ROOT/reports/bench/issue13}"
PY="$ROOT/.venv/bin/python"
BASE_TREE="$(mktemp -d /tmp/ratingctr-base-XXXX)"
git -C "$ROOT" worktree add -q --detach "$BASE_TREE" "$BASE_REV"
trap 'git -C "$ROOT" worktree remove --force "$BASE_TREE"' EXIT
mkdir -p "$OUT/raw"

base() { (cd "$BASE_TREE" && PYTHONPATH="$BASE_TREE" "$PY" -m training.cli "$@"); }
new() { (cd "$ROOT" && "$PY" -m ratingctr.cli "$@"); }

TRAIN=(bench train --models DCNV2,AutoInt --heads binary,rating --epochs 3 --runs 1)
GATEWAY=(bench gateway --bundle "$RATING" --reload-bundle "$BINARY" --clients 1 --seconds 8 --rounds 3
         --reloads 10 --reload-clients 1 --no-torchserve)
for round in $(seq 1 "$ROUNDS"); do
  base "${TRAIN[@]}" --out "$OUT/raw/train-base-$round.json"
  new "${TRAIN[@]}" --out "$OUT/raw/train-new-$round.json"
done
for round in $(seq 1 "$ROUNDS"); do
  base "${GATEWAY[@]}" --out "$OUT/raw/gateway-base-$round"
  new "${GATEWAY[@]}" --out "$OUT/raw/gateway-new-$round"
done
"$PY" "$ROOT/reports/bench/issue13/summarize.py" "$OUT" "$BASE_REV" "$(git -C "$ROOT" rev-parse --short HEAD)"
