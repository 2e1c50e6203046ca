"""Column types of every DataFrame ntdump returns, declared in one place.

Addresses and sizes are ``uint64``; tags and other repeated short labels are ``category``; names
are pandas ``string``. Each table's columns are declared where the table is built, as a ``dict`` of
column name -> one of the dtype names below, and turned into a DataFrame by :func:`frame`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
else:
    from ._lazy import np, pd  # imported on first use (start-up time)


class AddressDtype(str):
    """A dtype name that also marks its column as holding addresses (VAs or PAs): equal to the
    plain name (``"uint64"``, ``"UInt64"``), so pandas and comparisons see a str, while
    :func:`frame` lists such columns in ``df.attrs["address_columns"]`` for hex display."""

    __slots__ = ()


ADDRESS = AddressDtype("uint64")
"""An address column (VA or PA), uint64, shown in hex."""
NULLABLE_ADDRESS = AddressDtype("UInt64")
"""An address column with NA for unknown (nullable UInt64), shown in hex."""
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
    path and ``df.attrs["address_columns"]`` the ``ADDRESS`` columns. The frame is a
    :class:`ntdump._frame.Frame`: a DataFrame whose address columns print in hex.
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
    from ._frame import Frame  # imports pandas: only once a frame is built (start-up time)

    df = Frame(data, copy=False)
    if dump is not None:
        df.attrs["dump"] = dump
    df.attrs["address_columns"] = [n for n, t in schema.items() if isinstance(t, AddressDtype)]
    return df
