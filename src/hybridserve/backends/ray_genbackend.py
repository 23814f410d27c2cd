"""``hybridserve serve --backend ray`` of a generative family: chain models on Ray Serve.

The classifier Ray backend's design (``ray_backend``), for generation: one Serve deployment per
chain model (``ray_gendeployments.ChainLM``, loaded from the family YAML's path on its actor,
on the serve options' device), and the local ``GenerativeEngine`` in this process behind the
same OpenAI-compatible app as the local backend (``server.openai_app``), under uvicorn in a
thread. The engine's decode workers queue, batch, time and cancel requests and the policy
routes every generation here; only each batch's model call goes to an actor, one handle call
per batch (``ray_genreplicas.RemoteDecoders``, which retries calls whose replica died and
answers 503 when none is left). This process loads only the chain models' tokenizers.

Limits: the HTTP front is this process (``--ray-front serve`` is refused); batches are
request-level (iteration-level batching steps each model in this process: local backend only);
one replica per chain model, all on one device type (``--device``; on a GPU, the chain shares
one GPU's worth of Ray's ``num_gpus``). Without an address a local Ray instance is started, and
stopped again at the end.

    with RayGenerativeDeployment(target, RayBackendConfig(port=0)) as dep:
        openai.OpenAI(base_url=dep.url + "/v1", api_key="-").completions.create(...)
"""

from __future__ import annotations

import importlib
import logging
import socket
from typing import Any

from hybridserve.backends import ServeOptions, bind_port
from hybridserve.backends.ray_backend import RayBackendConfig, require_ray, wait_for_signal
from hybridserve.backends.ray_genreplicas import GenerativeFamilyRef, RemoteDecoders
from hybridserve.backends.ray_resources import is_gpu
from hybridserve.backends.ray_session import (
    NOSET_CUDA,
    RaySession,
    ServedOnRay,
    failure_detail,
    wait_ready,
)
from hybridserve.errors import HybridServeError
from hybridserve.genserving import GenerativeTarget
from hybridserve.models.generative_family import GenerativeFamily
from hybridserve.runtime.config import EngineConfig
from hybridserve.runtime.genengine import GenerativeEngine, giant_only_policy
from hybridserve.server.settings import ServerSettings

log = logging.getLogger(__name__)

FRONT_REFUSED = (
    "--ray-front serve: a generative family is served with its HTTP front in this process "
    "(--ray-front process, the default); Serve's proxies front classifier cascades only"
)
ITERATION_REFUSED = (
    "--iteration-level: iteration-level batching steps each model in the serving process, so "
    "it runs on the local backend only; on Ray, batches are request-level (drop the option)"
)


def chain_of(target: GenerativeTarget) -> tuple[str, ...]:
    """The chain models served: the policy's, else the giant alone."""
    if target.policy is not None:
        return target.policy.chain
    return (target.config.models[-1].name,)


class RayGenerativeDeployment(ServedOnRay):
    """A generative cascade on Ray Serve; a context manager that undeploys (and stops Ray).

    The HTTP app runs in a thread of this process on ``sock`` (bound by the caller, else on
    ``config.host:config.port``); ``engine`` is its engine once started.
    """

    def __init__(
        self,
        target: GenerativeTarget,
        config: RayBackendConfig | None = None,
        engine: EngineConfig | None = None,
        server: ServerSettings | None = None,
        *,
        device: str = "cpu",
        decode_batch: int = 8,
        max_wait_ms: float = 2.0,
        iteration_level: bool = False,
        sock: socket.socket | None = None,
    ) -> None:
        super().__init__(sock)
        self.config = config or RayBackendConfig()
        if self.config.front != "process":
            raise HybridServeError(FRONT_REFUSED)
        if iteration_level:
            raise HybridServeError(ITERATION_REFUSED)
        if decode_batch < 1:
            raise HybridServeError(f"--decode-batch must be >= 1, got {decode_batch}")
        self.target = target
        self.chain = chain_of(target)
        self.device = device
        self.decode_batch = decode_batch
        self.max_wait_ms = max_wait_ms
        self.engine_config = engine or EngineConfig()
        self.server = server or ServerSettings()
        self.family_ref = GenerativeFamilyRef(str(target.family_path))
        # tokenizers only, and the policy checked against them, before anything starts
        self.family: GenerativeFamily = self.family_ref.front_family(self.chain)
        self.policy = target.policy or giant_only_policy(self.family)
        self.policy.check_family(self.family.names, self.family.name)
        self.engine: GenerativeEngine | None = None
        self.source: RemoteDecoders | None = None

    # ------------------------------------------------------------------ deploy
    def _application(self) -> Any:
        from ray import serve

        from hybridserve.backends.ray_deployments import Roster
        from hybridserve.backends.ray_gendeployments import ChainLM

        cfg = self.config
        lm: Any = serve.deployment(ChainLM)
        options: dict[str, Any] = {"num_cpus": cfg.num_cpus_per_part}
        if is_gpu(self.device):
            # the chain shares one GPU's worth of Ray's accounting; the actor sees every GPU
            # of its node, so --device cuda:N is the real GPU N
            options["num_gpus"] = 1.0 / len(self.chain)
            options["runtime_env"] = {"env_vars": {NOSET_CUDA: "1"}}
        entries = {
            model: lm.options(
                name=model,
                num_replicas=1,
                ray_actor_options=options,
                # the engine queues and refuses work (503) at its entry; an actor holds what
                # it is handed (one call at a time per chain model)
                max_ongoing_requests=cfg.part_max_ongoing_requests,
                max_queued_requests=-1,
            ).bind(self.family_ref, model, self.device, cfg.torch_threads)
            for model in self.chain
        }
        roster: Any = serve.deployment(Roster)
        return roster.options(name="roster", ray_actor_options={"num_cpus": 0}).bind(entries)

    def _check_capacity(self, session: RaySession) -> None:
        if not is_gpu(self.device):
            return
        gpus = float(session.ray.cluster_resources().get("GPU", 0.0))
        if gpus < 1.0:
            raise HybridServeError(
                f"--device {self.device}: the Ray cluster has no GPU (GPU resource {gpus:g}); "
                "the chain models would wait forever"
            )

    def start(self) -> RayGenerativeDeployment:
        """Connect to (or start) Ray, deploy, and wait until the HTTP app answers ready."""
        cfg = self.config
        session = self._session = RaySession.open(
            require_ray(),
            cfg.address,
            num_cpus=cfg.num_cpus,
            object_store_bytes=cfg.object_store_bytes,
        )
        try:
            self._check_capacity(session)
            serve: Any = importlib.import_module("ray.serve")
            session.deployed = True
            serve.start(proxy_location="Disabled")
            try:
                serve.run(self._application(), name=cfg.app_name, route_prefix=None)
            except RuntimeError as err:
                why = failure_detail(serve, cfg.app_name)
                raise HybridServeError(
                    f"Ray Serve could not deploy the chain models: {err}"
                    + (f" ({why})" if why else "")
                ) from err
            self._serve_here(serve)
            wait_ready(self.url, self._http, cfg.ready_timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _serve_here(self, serve: Any) -> None:
        """The engine over the deployments' handles and its OpenAI app, in this process."""
        from hybridserve.backends.ray_gendeployments import remote_decoders
        from hybridserve.server.openai_app import create_generative_app

        cfg = self.config
        handles = {m: serve.get_deployment_handle(m, cfg.app_name) for m in self.chain}
        self.source = remote_decoders(handles, cfg.retries, cfg.retry_backoff_s)
        self.engine = GenerativeEngine(
            self.policy,
            self.family,
            self.engine_config,
            max_batch=self.decode_batch,
            max_wait_ms=self.max_wait_ms,
            decoders=self.source,
        )
        self._serve_app(create_generative_app(self.engine, self.server))

    # ------------------------------------------------------------------ operations
    def replica_actors(self, model: str) -> list[str]:
        """Actor names of the replicas serving chain model ``model`` (for ``ray.kill``)."""
        return self._replica_actors({model})


def check_options(options: ServeOptions) -> None:
    """What the Ray backend refuses for a generative family, before anything starts."""
    if options.ray_front != "process":
        raise HybridServeError(FRONT_REFUSED)
    if options.iteration_level:
        raise HybridServeError(ITERATION_REFUSED)


def serve_options(options: ServeOptions, target: GenerativeTarget) -> None:
    """``hybridserve serve --backend ray`` of a generative family: bind the port (a taken one
    is reported in a second, and kept to serve on), deploy, serve until SIGINT/SIGTERM, then
    drain and undeploy."""
    from rich.console import Console

    check_options(options)
    require_ray()
    sock = bind_port(options.host, options.port)
    with sock:
        port = int(sock.getsockname()[1])
        config = RayBackendConfig(address=options.address, host=options.host, port=port)
        dep = RayGenerativeDeployment(
            target,
            config,
            options.engine,
            options.server,
            device=options.device,
            decode_batch=options.decode_batch,
            sock=sock,
        )
        console = Console(stderr=True)
        with console.status("deploying on Ray Serve"):
            dep.start()
        try:
            console.print(
                f"{dep.family.name} on Ray Serve: {' → '.join(dep.chain)} on {dep.device} "
                f"(policy {target.policy_source}); serving at {dep.url}/v1 (Ctrl-C stops)",
                highlight=False,
            )
            wait_for_signal(lambda: dep.serving)
        finally:
            dep.stop()
    if dep.failure is not None:
        raise HybridServeError(dep.failure)
