"""Optional dependencies: a missing one is an error that names the extra to install."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import ModuleType

__all__ = ("require",)


def require(module: str, extra: str, needed_by: str) -> ModuleType:
    """Import ``module``, or fail with ``pip install "cancelkit[extra]"`` in the message.

    Raises:
        ImportError: the module is not installed; the message says what to install.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f'{needed_by} needs {module.partition(".")[0]}: pip install "cancelkit[{extra}]"'
        ) from exc
