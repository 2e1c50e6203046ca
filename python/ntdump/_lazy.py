"""pandas and numpy, imported on first use (start-up time: issue 13).

``import ntdump`` and CLI commands that print text (``ntdump info``, ``ntdump db``) never build a
DataFrame, so they should not pay for importing pandas (0.3 to 0.5 s). Modules that build frames
write::

    if TYPE_CHECKING:
        import pandas as pd
    else:
        from ._lazy import pd

and use ``pd`` as usual: the first attribute read (``pd.DataFrame``, ``pd.NA``) imports the real
module and copies its namespace into the stand-in, so later reads cost a plain attribute lookup.
The bottom floor of the package: it imports nothing from ntdump.
"""

from __future__ import annotations

import importlib
import types
from typing import Any


class LazyModule(types.ModuleType):
    """A stand-in for a module that is imported when one of its attributes is first read."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.__dict__["_lazy_target"] = name

    def __getattr__(self, attr: str) -> Any:
        # Called only for names not yet in our namespace: import, copy the namespace, retry.
        mod = importlib.import_module(self.__dict__["_lazy_target"])
        for k, v in vars(mod).items():
            if k not in ("__name__", "_lazy_target"):
                self.__dict__.setdefault(k, v)
        try:
            return self.__dict__[attr]
        except KeyError:
            return getattr(mod, attr)  # a module-level __getattr__ of the real module

    def __dir__(self) -> list[str]:
        return dir(importlib.import_module(self.__dict__["_lazy_target"]))


pd: Any = LazyModule("pandas")
"""pandas, imported on first attribute access."""
np: Any = LazyModule("numpy")
"""numpy, imported on first attribute access."""

__all__ = ["LazyModule", "np", "pd"]
