"""The DataFrame class of every table ntdump returns: uint64 addresses, shown in hex.

Address columns stay ``uint64`` (or nullable ``UInt64``) for computation — ``df.base + 0x1000``,
``df[df.address.between(lo, hi)]`` — while ``print(df)``, ``repr(df)`` and the notebook view
(``_repr_html_``) show them as kd does: ``fffff804`7ba00000`` (16 digits with a backtick when a
value of the column needs more than 32 bits, else 8 digits). Which columns are addresses is
``df.attrs["address_columns"]``, set by :func:`ntdump._schema.frame` from the table's schema (the
``ADDRESS`` / ``NULLABLE_ADDRESS`` dtype names); :func:`hex_view` gives the display copy of any
frame. Frames derived from one (slices, ``head()``, ``sort_values()``) keep the class and attrs.

Imported only when a frame is built (it imports pandas): see :mod:`ntdump._lazy`.
"""

from __future__ import annotations

from typing import Any

import pandas as pd


def _kd(v: Any, wide: bool) -> str:
    if v is None or v is pd.NA:
        return "<NA>"
    v = int(v)
    if wide:
        return f"{(v >> 32) & 0xFFFFFFFF:08x}`{v & 0xFFFFFFFF:08x}"
    return f"{v:08x}"


def hex_column(s: pd.Series) -> pd.Series:
    """An address column as kd-style hex strings (the display form; values unchanged)."""
    vals = s.dropna()
    wide = bool(len(vals)) and int(vals.max()) > 0xFFFFFFFF
    return s.map(lambda v: _kd(v, wide), na_action=None).astype(object)


def address_columns(df: pd.DataFrame) -> list[str]:
    """The columns of ``df`` that hold addresses (from ``df.attrs["address_columns"]``)."""
    cols = df.attrs.get("address_columns") or ()
    return [c for c in cols if c in df.columns]


def hex_view(df: pd.DataFrame) -> pd.DataFrame:
    """A plain DataFrame for display: ``df`` with its address columns as kd-style hex strings."""
    out = pd.DataFrame(df, copy=False)
    cols = address_columns(df)
    if cols:
        out = out.copy(deep=False)
        for c in cols:
            out[c] = hex_column(df[c])
    return out


class Frame(pd.DataFrame):
    """A :class:`pandas.DataFrame` whose address columns print in hex (see the module doc)."""

    @property
    def _constructor(self) -> type[Frame]:
        return Frame

    def __repr__(self) -> str:
        return pd.DataFrame.__repr__(hex_view(self))

    def _repr_html_(self) -> str | None:
        return pd.DataFrame._repr_html_(hex_view(self))

    def to_string(self, *args: Any, **kw: Any) -> str:
        """As :meth:`pandas.DataFrame.to_string`, addresses in hex."""
        return pd.DataFrame.to_string(hex_view(self), *args, **kw)


__all__ = ["Frame", "address_columns", "hex_column", "hex_view"]
