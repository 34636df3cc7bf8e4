"""``ratingctr compare BASE OTHER``: who gains, overall and per user-activity group.

MCI (paper 2) puts a gain c over a baseline p_b in proportion to the headroom left:
MCI = log((1 − p_b) / (1 − p_b − c)).  The same +0.01 AUC is worth more on a group
already at 0.85 than on one at 0.70, which is what "under-served users benefit"
claims have to be weighed by.  Two runs are compared only on the same test rows
(``split_hash``, recorded by ``training.run.train_run``).
"""
from __future__ import annotations

import json
from pathlib import Path

from ratingctr.errors import UserError
from ratingctr.training.metrics import GROUP_NAMES, mci


def _metrics(run: Path) -> dict:
    path = run / "metrics.json" if run.is_dir() else run
    if not path.is_file():
        raise UserError(f"metrics.json not found: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON: {exc}") from exc


def _row(name: str, base: float | None, other: float | None) -> dict:
    if base is None or other is None:
        return {"name": name, "base": base, "other": other, "delta": None, "relative": None, "mci": None}
    delta = other - base
    try:
        index = mci(base, delta)
    except ValueError as exc:
        raise UserError(f"{name}: {exc}") from exc
    return {"name": name, "base": base, "other": other, "delta": delta, "relative": delta / base, "mci": index}


def check_same_test_rows(base: dict, other: dict) -> list[str]:
    """``UserError`` unless both runs were scored on the same test rows; returns warnings.

    The proof is the ``split_hash`` each run records at train time (sha256 of its test
    rows).  A run written before the hash existed can only be checked by its test-row
    count, which two different splits can share: that is said, not hidden.
    """
    hashes = {"base": base.get("split_hash"), "other": other.get("split_hash")}
    if hashes["base"] and hashes["other"]:
        if hashes["base"] != hashes["other"]:
            raise UserError(f"the two runs were evaluated on different test rows (split hash "
                            f"{hashes['base'][:12]} vs {hashes['other'][:12]}: another seed, split mode or data)")
        return []
    if base.get("dataset", {}).get("test") != other.get("dataset", {}).get("test"):
        raise UserError("the two runs were evaluated on different test sets (test-row counts differ)")
    old = [name for name, h in hashes.items() if not h]
    return [f"the {' and '.join(old)} run{'s' if len(old) > 1 else ''} predate{'' if len(old) > 1 else 's'} the "
            "split hash: only the test-row counts could be checked (equal), not the rows themselves"]


def compare_runs(base_run: Path, other_run: Path) -> dict:
    base, other = _metrics(Path(base_run)), _metrics(Path(other_run))
    warnings = check_same_test_rows(base, other)
    rows = [_row("overall", base["test"]["auc"], other["test"]["auc"])]
    for group in GROUP_NAMES:
        rows.append(_row(group, base["groups"][group]["auc"], other["groups"][group]["auc"]))
    return {"base": str(base_run), "other": str(other_run), "rows": rows, "warnings": warnings,
            "variance": {"base": base["groups"]["variance"], "other": other["groups"]["variance"]}}


def format_comparison(result: dict) -> str:
    lines = [f"base:  {result['base']}", f"other: {result['other']}"]
    lines += [f"warning: {w}" for w in result.get("warnings", [])]
    lines += ["",
             f"{'group':<8} {'base AUC':>9} {'other AUC':>9} {'delta':>9} {'relative':>9} {'MCI':>9}"]
    for r in result["rows"]:
        if r["delta"] is None:
            lines.append(f"{r['name']:<8} {'n/a':>9} {'n/a':>9}")
            continue
        lines.append(f"{r['name']:<8} {r['base']:>9.4f} {r['other']:>9.4f} {r['delta']:>+9.4f} "
                     f"{r['relative']:>+9.2%} {r['mci']:>+9.4f}")
    v = result["variance"]
    lines.append(f"\ngroup AUC variance: base {v['base']:.3g}, other {v['other']:.3g}")
    return "\n".join(lines)
