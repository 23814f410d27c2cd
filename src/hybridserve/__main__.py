"""``python -m hybridserve``: the ``hybridserve`` command, for environments without the script."""

from hybridserve.cli import main

if __name__ == "__main__":
    main()
