"""Compare a measured value with a guideline threshold in whatever UCUM unit each is written.

Records state a temperature in ``Cel`` or ``[degF]``, a CRP in ``mg/L`` or ``mg/dL``; the
guideline's threshold names one unit.  Conversion is done by ``ucumvert`` (a UCUM grammar over
pint's unit registry), not by a hand-written table.  pint is slow per call (about a millisecond)
and charts repeat the same few unit pairs, so each pair's conversion is measured once as an
affine map ``value * scale + offset`` (exact for every UCUM conversion, temperatures included)
and memoised.  A unit that cannot be parsed, or that measures something else, converts to
``None``: the criterion is then unknown, never met.
"""
from __future__ import annotations

import functools

# Record units written as text rather than UCUM, seen in real EHR feeds: the UCUM they mean.
TEXT_UNITS = {"°C": "Cel", "C": "Cel", "degC": "Cel", "deg C": "Cel", "°F": "[degF]", "F": "[degF]",
              "degF": "[degF]", "deg F": "[degF]", "mm/hr": "mm/h", "lbs": "[lb_av]", "lb": "[lb_av]",
              "K/uL": "10*3/uL", "x10^3/uL": "10*3/uL", "10^3/uL": "10*3/uL", "x10E3/uL": "10*3/uL",
              "10*9/L": "10*9/L", "x10^9/L": "10*9/L"}


@functools.cache
def _registry():
    from ucumvert import PintUcumRegistry  # loaded on first use (about a second), once per process
    return PintUcumRegistry()


def warm() -> None:
    """Load the unit registry now (at start-up) rather than on the first call that needs it."""
    _registry()


@functools.lru_cache(maxsize=512)
def _affine(source: str, target: str) -> tuple[float, float] | None:
    """(scale, offset) converting ``source`` to ``target``; None when they do not convert."""
    registry = _registry()
    try:
        src, dst = registry.from_ucum(source), registry.from_ucum(target)
        zero = registry.Quantity(0.0, src).to(dst).magnitude
        one = registry.Quantity(1.0, src).to(dst).magnitude
    except Exception:  # noqa: BLE001 - unparsable UCUM or incompatible dimensions: not comparable
        return None
    return one - zero, zero


def convert(value: float, unit: str | None, target: str) -> float | None:
    """``value`` in ``unit`` expressed in ``target``; None when the unit is missing or unknown."""
    if unit is None:
        return None
    unit = TEXT_UNITS.get(unit.strip(), unit.strip())
    if unit == target:
        return value
    if len(unit) > 40:
        return None  # hostile input: never handed to the parser
    factor = _affine(unit, target)
    return None if factor is None else round(value * factor[0] + factor[1], 6)  # 100.4 [degF] is 38.0 Cel
