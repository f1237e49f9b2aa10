"""``python -m vlexp.filter``: the standalone filtering pass (see :mod:`vlexp.filter`)."""

from vlexp.filter.cli import entry

if __name__ == "__main__":
    entry()
