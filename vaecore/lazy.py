"""Names of a package imported from their modules on first use (PEP 562), so that importing the
package stays cheap: ``vaecore`` (no torch for ``hookimpl``) and ``vaecore.analysis`` (no
torchmetrics for the command line's ``--help``)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_getattr(package: str, table: dict[str, str]) -> Callable[[str], Any]:
    """The module ``__getattr__`` of ``package`` for its public names in ``table`` (name -> the
    module it lives in); a name is cached in the package once imported."""

    def __getattr__(name: str) -> Any:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(importlib.import_module(package), name, value)
        return value

    return __getattr__
