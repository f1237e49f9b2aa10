"""Data sources by name: one module per registered ``data.source.name``.

Importing this package registers every built-in source (``synthetic``, ``csv``,
``webdataset``, ``wds_indexed``) in :data:`DATASETS`; readers live in
:mod:`vlexp.data.readers`, shard I/O in :mod:`vlexp.data.shards`.
"""

from vlexp.data.sources.base import DATASETS, DataSplits

__all__ = ["DATASETS", "DataSplits"]

from vlexp.data.sources import csv, synthetic, wds_indexed, webdataset  # noqa: E402,F401,I001  (registration)
