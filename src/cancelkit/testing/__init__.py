"""Tools to test that Stop means stop in your own code (and in cancelkit's)."""

from .._module import publish as _publish
from ._checkpoints import cancel_at_each_checkpoint as cancel_at_each_checkpoint

__all__ = ("cancel_at_each_checkpoint",)

_publish(__name__, globals())
