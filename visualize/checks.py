"""Validation at the figures' boundary: each check names the bad value and what is allowed."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from adamas.config import check_int


def _as_float(name: str, values: object) -> np.ndarray:
    """`values` as a float array, else ValueError naming it."""
    try:
        return np.asarray(values, dtype=float)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must hold numbers only: {err}") from None


def as_vector(name: str, values: Sequence[float] | np.ndarray, allow_empty: bool = False) -> np.ndarray:
    """`values` as a 1-D float array of finite numbers (non-empty unless allowed), else ValueError naming it."""
    array = _as_float(name, values)
    if array.ndim != 1 or (array.size == 0 and not allow_empty):
        raise ValueError(f"{name} must be a {'' if allow_empty else 'non-empty '}1-D sequence, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} must hold finite numbers only")
    return array


def as_array(name: str, values: Sequence | np.ndarray, ndim: int, allow_nan: bool = False) -> np.ndarray:
    """`values` as a non-empty float array with `ndim` dims, finite (or NaN where allowed), else ValueError."""
    array = _as_float(name, values)
    if array.ndim != ndim or array.size == 0:
        raise ValueError(f"{name} must be a non-empty array with {ndim} dims, got shape {array.shape}")
    finite = np.isfinite(array) | (np.isnan(array) if allow_nan else False)
    if not finite.all():
        raise ValueError(f"{name} must hold finite numbers{' or NaN' if allow_nan else ''} only")
    return array


def check_layers(dense_layers: Sequence[int], layers: int) -> tuple[int, ...]:
    """`dense_layers` as sorted distinct layer indices in [0, layers), else TypeError or ValueError naming them."""
    if isinstance(dense_layers, (str, bytes)) or not hasattr(dense_layers, "__iter__"):
        raise TypeError(f"dense_layers must be a sequence of ints, got {dense_layers!r}")
    return tuple(sorted({check_int("dense_layers item", i, 0, layers - 1) for i in dense_layers}))
