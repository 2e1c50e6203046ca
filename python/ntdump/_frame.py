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

import functools
from collections.abc import Callable
from typing import Any

import pandas as pd


def _kd(v: Any, wide: bool) -> str:
    if v is None or v is pd.NA:
        return "<NA>"
    v = int(v)
    if wide:
        return f"{(v >> 32) & 0xFFFFFFFF:08x}`{v & 0xFFFFFFFF:08x}"
    return f"{v:08x}"


def _is_wide(s: pd.Series) -> bool:
    vals = s.dropna()
    return bool(len(vals)) and int(vals.max()) > 0xFFFFFFFF


def hex_column(s: pd.Series) -> pd.Series:
    """An address column as kd-style hex strings (the display form; values unchanged)."""
    wide = _is_wide(s)
    return s.map(lambda v: _kd(v, wide)).astype(object)


def address_columns(df: pd.DataFrame) -> list[str]:
    """The columns of ``df`` that hold addresses (from ``df.attrs["address_columns"]``)."""
    cols = df.attrs.get("address_columns") or ()
    return [c for c in cols if c in df.columns]


def formatters(df: pd.DataFrame) -> dict[str, Callable[[Any], str]]:
    """pandas ``formatters=`` for ``df``'s address columns (width chosen per column). pandas
    applies them to the rows it displays only, so a repr of a long frame stays cheap."""
    out: dict[str, Callable[[Any], str]] = {}
    for c in address_columns(df):
        out[c] = functools.partial(_kd, wide=_is_wide(df[c]))
    return out


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
    """A :class:`pandas.DataFrame` whose address columns print in hex (see the module doc):
    ``repr()``/``print()`` (through :meth:`to_string`), :meth:`to_string`, :meth:`to_html` and the
    notebook view (``_repr_html_``) format them; the values stay uint64."""

    @property
    def _constructor(self) -> type[Frame]:
        return Frame

    def to_string(self, *args: Any, **kw: Any) -> str:
        """As :meth:`pandas.DataFrame.to_string`, addresses in hex."""
        kw["formatters"] = {**formatters(self), **(kw.get("formatters") or {})}
        return pd.DataFrame.to_string(self, *args, **kw)

    def to_html(self, *args: Any, **kw: Any) -> str:
        """As :meth:`pandas.DataFrame.to_html`, addresses in hex."""
        kw["formatters"] = {**formatters(self), **(kw.get("formatters") or {})}
        return pd.DataFrame.to_html(self, *args, **kw)

    def _repr_html_(self) -> str | None:
        if self._info_repr() or not pd.get_option("display.notebook_repr_html"):
            return pd.DataFrame._repr_html_(self)
        # pandas' own notebook view (DataFrame._repr_html_), with the address formatters.
        from pandas.io.formats import format as fmt

        f = fmt.DataFrameFormatter(
            self, na_rep="NaN", formatters=formatters(self),
            float_format=pd.get_option("display.float_format"), index_names=True, header=True,
            index=True, bold_rows=True, escape=True,
            max_rows=pd.get_option("display.max_rows"), min_rows=pd.get_option("display.min_rows"),
            max_cols=pd.get_option("display.max_columns"),
            show_dimensions=pd.get_option("display.show_dimensions"), decimal=".",
        )
        return fmt.DataFrameRenderer(f).to_html(notebook=True)


__all__ = ["Frame", "address_columns", "formatters", "hex_column", "hex_view"]
