"""Registers ``hybridserve serve``, whose command lives in ``backends/cli.py``.

The serve command picks a backend, so it sits above both ``server`` (the app) and ``backends``
(where the app runs). This module only forwards, until ``STAGE_MODULES`` in
``hybridserve/cli.py`` names ``hybridserve.backends.cli`` and it can be deleted.
"""

from hybridserve.backends.cli import register

__all__ = ["register"]
