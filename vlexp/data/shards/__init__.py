"""Tar shards: listing and opening, tar member I/O, the random-access index, export."""
