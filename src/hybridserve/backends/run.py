"""The serve step's runner: resolve and check what to serve, then hand it to a backend.

Everything that can be checked without a port or a loaded model is checked first
(``hybridserve.serving``), so a server that could never start exits 2 in seconds with one line.
"""

from __future__ import annotations

from hybridserve.backends import ServeOptions, get_backend
from hybridserve.serving import check_here, resolve_target


def run_serve(options: ServeOptions, backend: str = "local") -> None:
    """Serve ``options`` on ``backend`` until SIGTERM/SIGINT."""
    module = get_backend(backend)
    target = resolve_target(
        options.workdir,
        policy=options.policy,
        plan=options.plan,
        family=options.family,
        family_config=options.family_config,
    )
    # a Ray cluster given by address runs the plan on its own nodes, not on this machine
    check_here(target, queue_size=options.engine.queue_size, this_machine=options.address is None)
    module.serve_options(options, target)  # type: ignore[attr-defined]
