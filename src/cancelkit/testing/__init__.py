"""Tools to test that Stop means stop in your own code (and in cancelkit's)."""

from ._checkpoints import cancel_at_each_checkpoint as cancel_at_each_checkpoint

__all__ = ("cancel_at_each_checkpoint",)

for _name in __all__:
    globals()[_name].__module__ = __name__
del _name
