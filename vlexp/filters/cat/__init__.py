"""DiHT's Complexity-Action-Text (CAT) filter and its three criteria."""

from vlexp.filters.cat.filter import CATFilter

__all__ = ["CATFilter"]
