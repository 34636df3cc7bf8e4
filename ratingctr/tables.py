"""Markdown tables and number formats: one renderer for every report and benchmark table."""
from __future__ import annotations

from typing import Any, Sequence


def fmt(value: float | None, digits: int = 4, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def pm(mean: float | None, std: float | None, digits: int = 4) -> str:
    """``mean ± std`` (the std over seeds; ``±n/a`` with a single seed)."""
    if mean is None:
        return "n/a"
    return f"{mean:.{digits}f} ± {fmt(std, digits)}"


def pct(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value * 100:+.{digits}f}%"


def p_value(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2g}" if value >= 1e-4 else "<1e-4"


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
