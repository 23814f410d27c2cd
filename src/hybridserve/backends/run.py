"""The serve step's runner: resolve and check what to serve, then hand it to a backend.

Everything that can be checked without a port or a loaded model is checked first
(``hybridserve.serving``), so a server that could never start exits 2 in seconds with one line.
"""

from __future__ import annotations

from pathlib import Path

from hybridserve.backends import ServeOptions, get_backend
from hybridserve.errors import HybridServeError
from hybridserve.serving import check_here, resolve_target


def run_serve(options: ServeOptions, backend: str = "local") -> None:
    """Serve ``options`` on ``backend`` until SIGTERM/SIGINT."""
    from hybridserve.genserving import generative_family_path

    gen_path = generative_family_path(
        options.workdir, options.policy, options.family, options.family_config
    )
    if gen_path is not None:
        _serve_generative(options, backend, gen_path)
        return
    if options.giant_only or options.iteration_level:
        flag = "--giant-only" if options.giant_only else "--iteration-level"
        raise HybridServeError(
            f"{flag} applies to generative families (task: generate); a classifier "
            "family serves its policy's chain"
        )
    if options.engine.drift and backend != "local":
        raise HybridServeError("--drift: drift handling runs in the local backend only")
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


def _serve_generative(options: ServeOptions, backend: str, family_path: Path) -> None:
    """A generative family: the OpenAI-compatible app in this process; its models in this
    process too (local) or in one Ray Serve deployment per chain model (ray)."""
    from hybridserve.devices import resolve_device
    from hybridserve.genserving import resolve_generative_target

    get_backend(backend)  # an unknown backend is one line
    if options.engine.drift:
        # accepting it would promise shadow checks and alarms that never run
        raise HybridServeError(
            "--drift: drift handling covers classifier families only, not generative ones"
        )
    if options.plan is not None:
        raise HybridServeError(
            "--plan: plans do not place generative models yet; choose the device with --device"
        )
    if backend == "ray":
        from hybridserve.backends.ray_genbackend import check_options

        check_options(options)
    # a missing device fails before the policy is read; a Ray cluster given by address runs
    # the models on its own nodes, not on this machine
    if backend == "local" or options.address is None:
        resolve_device(options.device)
    target = resolve_generative_target(
        options.workdir, family_path, policy=options.policy, giant_only=options.giant_only
    )
    if backend == "ray":
        from hybridserve.backends import ray_genbackend

        ray_genbackend.serve_options(options, target)
        return
    from hybridserve.backends.local import serve_generative

    serve_generative(options, target)
