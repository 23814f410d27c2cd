"""``python -m hybridserve``: the same command as the ``hybridserve`` script."""

from hybridserve.cli import main

if __name__ == "__main__":
    main()
