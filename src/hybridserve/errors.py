"""The one error type users see: a clear message, exit code 2 in the CLI, 4xx over HTTP."""

from __future__ import annotations


class HybridServeError(Exception):
    """A problem with the user's input or setup, phrased so the user can fix it.

    The CLI prints ``str(err)`` on one line and exits with code 2; no traceback.
    """
