"""Medians of round medians, with their spread; ratios taken within a round, then summarized."""

from __future__ import annotations

import math
import statistics


def summary(values: list[float]) -> dict:
    """{'median', 'min', 'max', 'n'} of the finite values (None when there are none)."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def paired(a: list[float | None], b: list[float | None], op) -> list[float]:
    """op(a_i, b_i) for the rounds where both arms have a value (same round: same noise)."""
    return [op(x, y) for x, y in zip(a, b) if x is not None and y is not None]


def ratio(a: list, b: list) -> dict:
    return summary(paired(a, b, lambda x, y: x / y if y else float("nan")))


def diff(a: list, b: list) -> dict:
    return summary(paired(a, b, lambda x, y: x - y))


def med(s: dict | None):
    return None if s is None else s.get("median")


def fmt(s: dict | float | None, digits: int = 2, spread: bool = True) -> str:
    """'1.23 (1.10-1.40)' for a summary, '1.23' for a number, '-' for nothing."""
    if s is None:
        return "-"
    if isinstance(s, dict):
        if s.get("median") is None:
            return "-"
        m = f"{s['median']:.{digits}f}"
        if spread and s.get("n", 0) > 1:
            return f"{m} ({s['min']:.{digits}f}..{s['max']:.{digits}f})"
        return m
    return f"{s:.{digits}f}"
