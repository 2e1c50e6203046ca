"""Column types of every DataFrame ntdump returns, declared in one place.

Addresses and sizes are ``uint64``; tags and other repeated short labels are ``category``; names
are pandas ``string``. Each table's columns are declared where the table is built, as a ``dict`` of
column name -> one of the dtype names below, and turned into a DataFrame by :func:`frame`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

ADDRESS = "uint64"
UINT64 = "uint64"
UINT32 = "uint32"
INT64 = "int64"
COUNT = "int64"
BYTES = "uint64"
TAG = "category"
LABEL = "category"
NAME = "string"
BOOL = "bool"
OBJECT = "object"


def frame(
    columns: Mapping[str, Any], schema: Mapping[str, str], *, dump: str | None = None
) -> pd.DataFrame:
    """A DataFrame with exactly ``schema``'s columns, in its order and dtypes.

    ``columns`` maps names to sequences or numpy arrays (arrays are used without a copy where the
    dtype already matches). Missing columns become empty; ``df.attrs["dump"]`` records the source
    path.
    """
    n = None
    data: dict[str, Any] = {}
    for name, dtype in schema.items():
        col = columns.get(name)
        if col is None:
            col = [] if n is None else [None] * n
        if n is None:
            n = len(col)
        if dtype in (ADDRESS, UINT64, UINT32, INT64) and not isinstance(col, np.ndarray):
            col = np.asarray(list(col), dtype=dtype) if len(col) else np.empty(0, dtype=dtype)
        data[name] = pd.Series(col, dtype=dtype, copy=False)
    df = pd.DataFrame(data, copy=False)
    if dump is not None:
        df.attrs["dump"] = dump
    return df
