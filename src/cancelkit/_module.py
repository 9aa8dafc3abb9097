"""One fix-up for every public package: objects report where users import them from.

Each class and function is defined in a private module (``cancelkit._token``) and
re-exported by a public package (``cancelkit``). Tracebacks, ``repr()`` and the docs
should name the public home, so each package's ``__init__`` calls :func:`publish`
once, as trio's do with ``fixup_module_metadata``.
"""

from __future__ import annotations

from typing import Any

__all__ = ("publish",)


def publish(package: str, namespace: dict[str, Any]) -> None:
    """Make every object in ``namespace["__all__"]`` that is defined in a private
    module of cancelkit report ``package`` as its ``__module__``.

    An object already published by another package keeps that home (the first
    public package to export it is where it lives), and objects of other libraries
    are left alone.
    """
    for name in namespace["__all__"]:
        module = getattr(namespace[name], "__module__", None)
        if isinstance(module, str) and _is_private_cancelkit(module):
            namespace[name].__module__ = package


def _is_private_cancelkit(module: str) -> bool:
    parts = module.split(".")
    return parts[0] == "cancelkit" and any(part.startswith("_") for part in parts[1:])
