"""Errors of the flist package; each message names the rule that was broken."""

from __future__ import annotations


class FlistError(ValueError):
    """An flist (or a source to pack) that breaks a rule; refused before anything is written."""


class StoreError(RuntimeError):
    """A block store that cannot be reached, refuses a write, or does not have a block."""


class BlockError(FlistError):
    """A block whose bytes do not match its id, key or expected size."""
