"""Numbers as the reports print them: short, and never hiding that a value is missing or not finite."""

from __future__ import annotations

import math
from typing import Any

MISSING = "–"


def as_float(value: Any) -> float | None:
    """A float from results.json, where non-finite floats are stored as the strings "nan", "inf", "-inf"."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _nonfinite(x: float) -> str:
    return "NaN" if math.isnan(x) else ("∞" if x > 0 else "−∞")


def number(value: Any) -> str:
    """General number: integers with thousands separators, floats to 3 significant digits."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    x = as_float(value)
    if x is None:
        return str(value)
    if not math.isfinite(x):
        return _nonfinite(x)
    if x == 0:
        return "0"
    return f"{x:.3g}" if 1e-3 <= abs(x) < 1e4 else sci(x, 2)


def sci(value: Any, digits: int = 1) -> str:
    """Scientific notation with a short exponent: 0.000204 -> "2.0e-4"."""
    x = as_float(value)
    if x is None:
        return MISSING
    if not math.isfinite(x):
        return _nonfinite(x)
    if x == 0:
        return "0"
    mantissa, exponent = f"{x:.{digits}e}".split("e")
    if 0 <= int(exponent) <= 3:  # 2.25 and 310, not 2.25e0 and 3.1e2
        return f"{float(f'{x:.{digits}e}'):g}"
    return f"{mantissa}e{int(exponent)}"


def precise(value: Any) -> str:
    """Enough digits to tell float32 values apart: 829.7423 vs 829.5375."""
    x = as_float(value)
    if x is None:
        return MISSING
    return f"{x:.7g}" if math.isfinite(x) else _nonfinite(x)


def compact(value: Any) -> str:
    """Shortest faithful form for tolerances and axis labels: 0.0001 -> "1e-4", 0.25 -> "0.25"."""
    x = as_float(value)
    if x is None:
        return MISSING
    if not math.isfinite(x):
        return _nonfinite(x)
    if x == 0 or 1e-2 <= abs(x) < 1e4:
        return f"{x:.4g}"
    mantissa, exponent = f"{x:.3e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def percent(fraction: Any) -> str:
    x = as_float(fraction)
    if x is None:
        return MISSING
    pct = 100.0 * x
    if pct == 0:
        return "0 %"
    if pct >= 1:
        return f"{pct:.1f} %"
    return f"{pct:.2g} %" if pct >= 0.01 else f"{sci(pct)} %"


def closeness(value: Any) -> str:
    """A similarity close to 1 as "1 − 6.6e-11", so its distance from 1 stays readable."""
    x = as_float(value)
    if x is None:
        return MISSING
    if math.isfinite(x) and 0.999 < x < 1:
        return f"1 − {sci(1 - x)}"
    return f"{x:.6g}" if math.isfinite(x) else _nonfinite(x)


def size(value: Any) -> str:
    if value is None:
        return MISSING
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if amount < 1024 or unit == "GiB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return str(value)


def duration(seconds: Any) -> str:
    x = as_float(seconds)
    if x is None:
        return MISSING
    if x < 1:
        return f"{x * 1000:.0f} ms" if x >= 0.0005 else "0 s"
    if x < 60:
        return f"{x:.1f} s"
    minutes, rest = divmod(round(x), 60)
    return f"{minutes} min {rest:02d} s"


def count_label(n: float) -> str:
    """1 -> "1", 1000 -> "1k", 1e6 -> "1M" (axis labels)."""
    for threshold, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= threshold:
            return f"{n / threshold:g}{suffix}"
    return f"{n:g}"
