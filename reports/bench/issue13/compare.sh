#!/usr/bin/env bash
# Behaviour-preserving refactor check (issue 13): `bench train` and/or `bench gateway` of a
# baseline commit and of a new commit, interleaved (base, new, base, new, ...) on the same
# machine, data and bundles.  Writes raw JSON per round under $OUT/raw and $OUT/summary.md.
#
#   reports/bench/issue13/compare.sh BASE_REV NEW_REV BINARY_BUNDLE RATING_BUNDLE [ROUNDS] [train|gateway|both]
#
# Both sides run from clean git worktrees with this checkout's .venv, so uncommitted edits
# never leak into a measurement.  Before the single namespace (BASE_REV) the modules were
# top-level `training`, `serving`, ...: PYTHONPATH and `python -m training.cli` reach them.
# After it (either side), the worktree's rooms are linked under its `ratingctr/` so that
# PYTHONPATH resolves every `ratingctr.*` module inside the worktree, not in the editable install.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../../.." && pwd)"
BASE_REV="$1"; NEW_REV="$2"; BINARY="$3"; RATING="$4"; ROUNDS="${5:-3}"; WHAT="${6:-both}"
OUT="$(realpath -m "${OUT:-$ROOT/reports/bench/issue13}")"
PY="$ROOT/.venv/bin/python"
BASE_TREE="$(mktemp -d /tmp/ratingctr-base-XXXX)"; NEW_TREE="$(mktemp -d /tmp/ratingctr-new-XXXX)"
git -C "$ROOT" worktree add -q --detach "$BASE_TREE" "$BASE_REV"
git -C "$ROOT" worktree add -q --detach "$NEW_TREE" "$NEW_REV"
trap 'git -C "$ROOT" worktree remove --force "$BASE_TREE"; git -C "$ROOT" worktree remove --force "$NEW_TREE"' EXIT
for tree in "$NEW_TREE" "$BASE_TREE"; do
  if [[ -f "$tree/ratingctr/cli.py" ]]; then  # the single namespace: link the rooms into it
    for room in training export serving loadtest online; do
      [[ -d "$tree/$room" ]] && ln -s "$tree/$room" "$tree/ratingctr/$room"
    done
  fi
done
mkdir -p "$OUT/raw"

if [[ -f "$BASE_TREE/ratingctr/cli.py" ]]; then BASE_MODULE=ratingctr.cli; else BASE_MODULE=training.cli; fi
base() { (cd "$BASE_TREE" && PYTHONPATH="$BASE_TREE" "$PY" -m "$BASE_MODULE" "$@"); }
new() { (cd "$NEW_TREE" && PYTHONPATH="$NEW_TREE" "$PY" -m ratingctr.cli "$@"); }
(cd "$NEW_TREE" && PYTHONPATH="$NEW_TREE" "$PY" -c "import ratingctr.serving.gateway as g, sys; \
  sys.exit(0 if g.__file__.startswith('$NEW_TREE') else 'new side does not resolve to its worktree')")

TRAIN=(bench train --models DCNV2,AutoInt --heads binary,rating --epochs 3 --runs 1)
GATEWAY=(bench gateway --bundle "$RATING" --reload-bundle "$BINARY" --clients 1 --seconds 8 --rounds 3
         --reloads 10 --reload-clients 1 --no-torchserve)
if [[ "$WHAT" != gateway ]]; then
  for round in $(seq 1 "$ROUNDS"); do
    base "${TRAIN[@]}" --out "$OUT/raw/train-base-$round.json"
    new "${TRAIN[@]}" --out "$OUT/raw/train-new-$round.json"
  done
fi
if [[ "$WHAT" != train ]]; then
  for round in $(seq 1 "$ROUNDS"); do
    base "${GATEWAY[@]}" --out "$OUT/raw/gateway-base-$round"
    new "${GATEWAY[@]}" --out "$OUT/raw/gateway-new-$round"
  done
fi
"$PY" "$ROOT/reports/bench/issue13/summarize.py" "$OUT" "$BASE_REV" "$NEW_REV"
