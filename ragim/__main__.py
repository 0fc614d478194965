"""``python -m ragim``: the same command line as the ``ragim`` script (:func:`ragim.cli.main`)."""

from ragim.cli import main

if __name__ == "__main__":
    main()
