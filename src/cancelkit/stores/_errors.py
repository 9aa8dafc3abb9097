"""Errors of the stores."""

from __future__ import annotations

__all__ = ("StoreUnavailable",)


class StoreUnavailable(ConnectionError):  # noqa: N818 - a state, like ConnectionRefused
    """The database cannot be reached or opened; nothing was written."""
