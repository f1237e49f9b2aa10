"""Strict reading of CSV/TSV tables: every row has the header's field count and balanced
quotes, or it is reported as malformed with its line number.

A plain CSV parser lets a row with an unbalanced quote run on through the next lines
until some later quote closes it, so one caption silently swallows the rows after it
(their file names included). Here a record that spans several physical lines is
accepted only when none of the lines strictly inside it would be a well-formed row on
its own; otherwise its first line is malformed and parsing restarts at the next line.
A legitimate multi-line quoted caption whose inner line happens to look like a row is
therefore dropped (counted), never merged. Blank lines are skipped.
"""

from __future__ import annotations

import csv
import os
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO


@dataclass
class DelimitedTable:
    """The header, the well-formed records (with their first line numbers, 1-based) and
    the malformed lines ``(line, why)`` of a delimited text file."""

    header: list[str]
    records: list[list[str]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    malformed: list[tuple[int, str]] = field(default_factory=list)


class _Lines:
    """The file's physical lines with their numbers; lines can be pushed back."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.number = 0  # number of the last line handed out
        self.pending: deque[tuple[int, str]] = deque()
        self.taken: list[tuple[int, str]] = []  # lines handed out since the last reset

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        if self.pending:
            item = self.pending.popleft()
        else:
            line = self.stream.readline()
            if not line:
                raise StopIteration
            self.number += 1
            item = (self.number, line)
        self.taken.append(item)
        return item[1]

    def reset(self) -> list[tuple[int, str]]:
        taken, self.taken = self.taken, []
        return taken

    def push_back(self, items: list[tuple[int, str]]) -> None:
        self.pending.extendleft(reversed(items))


def _is_row(line: str, sep: str, ncols: int) -> bool:
    """Whether one physical line alone parses as a complete row of ``ncols`` fields."""
    try:
        rows = list(csv.reader([line], delimiter=sep, strict=True))
    except csv.Error:
        return False
    return len(rows) == 1 and len(rows[0]) == ncols


def read_header(path: str | os.PathLike, sep: str) -> list[str]:
    """The column names of a CSV/TSV file (its first non-blank record)."""
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        for record in csv.reader(f, delimiter=sep):
            if record:
                return record
    raise ValueError(f"{path} is empty: expected a header line with the column names")


def read_delimited(path: str | os.PathLike, sep: str) -> DelimitedTable:
    """Parse a CSV/TSV file strictly (see the module docstring). Bytes that are not
    UTF-8 are kept (``surrogateescape``) for the caller to judge."""
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        lines = _Lines(f)
        reader = csv.reader(lines, delimiter=sep, strict=True)
        header: list[str] | None = None
        table = DelimitedTable(header=[])
        while True:
            why = None
            try:
                record = next(reader)
            except StopIteration:
                break
            except csv.Error as e:
                record, why = None, f"bad quoting ({e})"
            taken = lines.reset()
            if not taken:
                break
            first = taken[0][0]
            if header is None:
                if record is None:
                    raise ValueError(f"{path}: the header line cannot be parsed ({why})")
                if not record:
                    continue
                header = table.header = record
                continue
            ncols = len(header)
            if len(taken) > 1:
                inner = taken[1:-1] if why is None else taken[1:]
                if any(_is_row(line, sep, ncols) for _, line in inner):
                    last = taken[-1][0]
                    record, why = None, f"unbalanced quote (the field ran on to line {last})"
            if record is None:
                table.malformed.append((first, str(why)))
                lines.push_back(taken[1:])  # the swallowed lines are rows of their own
                continue
            if not record or (len(record) == 1 and not record[0].strip() and ncols > 1):
                continue  # a blank line
            if len(record) != ncols:
                table.malformed.append((first, f"{len(record)} fields, the header has {ncols}"))
                continue
            table.records.append(record)
            table.lines.append(first)
        if header is None:
            raise ValueError(f"{path} is empty: expected a header line with the column names")
        return table
