"""``python -m vlexp.run [overrides]``: train (kept for the old form; see :mod:`vlexp.cli.train`)."""

from vlexp.cli.train import main

if __name__ == "__main__":
    main()
