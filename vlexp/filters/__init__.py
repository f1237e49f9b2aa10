"""Pair filters applied to the training set before sampling."""

from vlexp.filters.base import FILTERS, FilterReport, PairFilter

__all__ = ["FILTERS", "FilterReport", "PairFilter"]

from vlexp.filters import cat, none  # noqa: E402,F401,I001  (registration)
