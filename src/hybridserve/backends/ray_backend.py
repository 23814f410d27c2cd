"""``hybridserve serve --backend ray``: the policy and plan deployed on a Ray Serve cluster.

One Serve application holds a deployment per model part (``ray_deployments.ModelPart``;
replicas, devices and batching from the plan, see ``ray_resources``). The engine is the local
backend's (``runtime.Engine``): it batches requests, routes each batch's rows by the policy and
sends the rows that continue on as the next batch, with one handle call per batch
(``ray_replicas``). Where the HTTP front runs is ``RayBackendConfig.front``:

- ``process`` (default): the app and engine run in this process under uvicorn, as the local
  backend's do. Nothing per request crosses a process boundary; one front serves the cluster.
- ``serve``: an ingress deployment runs the same app and engine behind Serve's HTTP proxies
  (one per node), for ingress on several nodes; each request then pays the proxy's hop.

Without an address a local Ray instance is started, and stopped again at the end
(``ray_session``). Generative families take the same design in ``ray_genbackend``.

    with RayDeployment(policy, plan, FamilyRef("fashion-mnist")) as dep:
        httpx.post(dep.url + "/v1/predict", json={"inputs": [...]})
"""

from __future__ import annotations

import importlib
import logging
import signal
import socket
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from hybridserve.backends import ServeOptions, bind_port
from hybridserve.backends.ray_family import FamilyRef
from hybridserve.backends.ray_replicas import RemoteReplicas
from hybridserve.backends.ray_resources import (
    RESOURCE_PREFIX,
    GroupSpec,
    deployment_groups,
    is_gpu,
    missing_resources,
    node_resources,
    ray_start_hint,
)
from hybridserve.backends.ray_session import (
    NOSET_CUDA,
    RaySession,
    ServedOnRay,
    failure_detail,
    http_url,
    wait_ready,
)
from hybridserve.errors import HybridServeError
from hybridserve.planning.plan import Plan
from hybridserve.runtime.config import EngineConfig
from hybridserve.runtime.engine import Engine
from hybridserve.server.settings import ServerSettings
from hybridserve.serving import ServeTarget
from hybridserve.tuning.policy import CascadePolicy

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'hybridserve[ray]'"


class RayBackendConfig(BaseModel):
    """Where and how the Ray backend deploys; counts, seconds and bytes are named as such."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: str | None = Field(
        None, description="Ray cluster ('auto', 'ray://host:10001'); None starts a local one"
    )
    host: str = Field("127.0.0.1", description="address Serve's HTTP proxies bind")
    port: int = Field(8000, ge=0, le=65535, description="HTTP port of Serve's proxies")
    app_name: str = Field("hybridserve", min_length=1, description="Serve application name")
    front: Literal["process", "serve"] = Field(
        "process",
        description="HTTP front: 'process' (this process, uvicorn) or 'serve' (Serve's proxies "
        "and an ingress deployment)",
    )
    ingress_replicas: int = Field(
        1, ge=1, description="front 'serve': ingress replicas (1 keeps /metrics in one place)"
    )
    ingress_max_ongoing_requests: int = Field(
        1024, ge=1, description="front 'serve': requests one ingress replica holds at once"
    )
    part_max_ongoing_requests: int = Field(
        16, ge=1, description="batches one part replica holds (computing, queued, handed on)"
    )
    num_cpus_per_part: float = Field(
        0.0, ge=0, description="Ray CPUs each part actor reserves (the device resource pins it)"
    )
    torch_threads: int | None = Field(
        None, ge=1, description="torch threads per part actor (None: Ray's default)"
    )
    call_min_rows: int = Field(
        64,
        ge=1,
        description="rows a model call carries at least, when queued (see remote_replicas)",
    )
    call_min_wait_ms: float = Field(
        10.0, ge=0, description="batch wait of a model call at least (ms)"
    )
    retries: int = Field(3, ge=0, description="retries of a call whose replica died")
    retry_backoff_s: float = Field(0.1, ge=0, description="first retry wait; doubles each try")
    ready_timeout_s: float = Field(300.0, gt=0, description="deploy and warm-up deadline")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a local Ray instance")
    object_store_bytes: int | None = Field(
        None, ge=80 * 1024 * 1024, description="object store of a local Ray instance"
    )


def require_ray() -> ModuleType:
    """Ray with Serve, or a ``HybridServeError`` saying how to install it."""
    try:
        ray = importlib.import_module("ray")
        importlib.import_module("ray.serve")
    except ImportError as err:
        raise HybridServeError(
            f"the Ray backend needs Ray Serve, which is not installed ({err}); run: {INSTALL_HINT}"
        ) from err
    return ray


def describe_groups(groups: dict[str, list[GroupSpec]]) -> dict[str, Any]:
    """The deployments as plain data (``/v1/policy`` shows it under ``engine``)."""
    return {
        "deployments": [
            {
                "model": g.model,
                "deployment": g.deployment_name(0),
                "replicas": g.num_replicas,
                "parts": [
                    {
                        "deployment": g.deployment_name(s.part),
                        "device": s.device_id,
                        "batch_size": s.batch_size,
                        "max_wait_ms": s.max_wait_ms,
                        "device_share": s.share,
                    }
                    for s in g.parts
                ],
            }
            for model_groups in groups.values()
            for g in model_groups
        ]
    }


def ray_engine(
    policy: CascadePolicy,
    plan: Plan,
    family: FamilyRef,
    source: RemoteReplicas,
    config: EngineConfig | None = None,
) -> Engine:
    """The local engine over actors: the family's names, labels and input checks come from its
    YAML (no weights load here); model calls go to ``source``."""
    return Engine(policy, plan, family.info(), config, replicas=source)


class RayDeployment(ServedOnRay):
    """The cascade deployed on Ray Serve; a context manager that undeploys (and stops Ray).

    With ``front="process"`` the HTTP app runs in a thread of this process on ``sock`` (bound
    by the caller, else on ``config.host:config.port``); ``engine`` is then its engine.
    """

    def __init__(
        self,
        policy: CascadePolicy,
        plan: Plan,
        family: FamilyRef,
        config: RayBackendConfig | None = None,
        engine: EngineConfig | None = None,
        server: ServerSettings | None = None,
        sock: socket.socket | None = None,
    ) -> None:
        super().__init__(sock)
        self.policy = policy
        self.plan = plan
        self.family = family
        self.config = config or RayBackendConfig()
        self.engine_config = engine or EngineConfig()
        self.server = server or ServerSettings()
        self.groups = self._check()
        self.engine: Engine | None = None
        self.source: RemoteReplicas | None = None

    def _check(self) -> dict[str, list[GroupSpec]]:
        self.policy.check_family(self.family.model_names(), self.family.read().family)
        if self.plan.family != self.policy.family:
            raise HybridServeError(
                f"plan is for family {self.plan.family!r}, the policy for "
                f"{self.policy.family!r}; re-run plan"
            )
        return deployment_groups(self.plan, self.policy.chain)

    # ------------------------------------------------------------------ cluster
    def _connect(self) -> RaySession:
        ray = require_ray()
        cfg = self.config
        if cfg.address is None and not ray.is_initialized():
            nodes = sorted({d.node for d in self.plan.devices if d.placements})
            if len(nodes) > 1:
                raise HybridServeError(
                    f"the plan places parts on {len(nodes)} nodes {nodes}; start Ray on each "
                    "(with the resources below) and pass --address auto\n"
                    + ray_start_hint(self.plan)
                )
        return RaySession.open(
            ray,
            cfg.address,
            num_cpus=cfg.num_cpus,
            object_store_bytes=cfg.object_store_bytes,
            resources=node_resources(self.plan),
        )

    def _check_capacity(self, ray: ModuleType) -> None:
        problems = missing_resources(self.groups, ray.cluster_resources())
        if problems:
            raise HybridServeError(
                "the Ray cluster cannot hold the plan (a deployment would wait forever): "
                + "; ".join(problems)
                + f"\nstart each node with its planned devices:\n{ray_start_hint(self.plan)}"
            )

    # ------------------------------------------------------------------ deploy
    def _parts(self) -> dict[str, Any]:
        """Every part's bound deployment; keyed by the deployment name of each group's first
        part (what the engine calls)."""
        from ray import serve

        from hybridserve.backends.ray_deployments import ModelPart

        cfg = self.config
        part_deployment: Any = serve.deployment(ModelPart)
        entries: dict[str, Any] = {}
        for groups in self.groups.values():
            for group in groups:
                downstream: Any = None
                for spec in reversed(group.parts):
                    options: dict[str, Any] = {
                        "num_cpus": cfg.num_cpus_per_part,
                        "resources": spec.resources,
                    }
                    if is_gpu(spec.device):
                        options["num_gpus"] = spec.num_gpus
                        options["runtime_env"] = {"env_vars": {NOSET_CUDA: "1"}}
                    # the engine queues and refuses work (503) at its entry; parts hold what
                    # they are handed
                    downstream = part_deployment.options(
                        name=group.deployment_name(spec.part),
                        num_replicas=group.num_replicas,
                        ray_actor_options=options,
                        max_ongoing_requests=cfg.part_max_ongoing_requests,
                        max_queued_requests=-1,
                    ).bind(self.family, spec, downstream, cfg.torch_threads)
                entries[group.deployment_name(0)] = downstream
        return entries

    def _application(self) -> Any:
        from ray import serve

        from hybridserve.backends.ray_deployments import CascadeIngress, Roster

        cfg = self.config
        entries = self._parts()
        if cfg.front == "process":
            roster: Any = serve.deployment(Roster)
            return roster.options(name="roster", ray_actor_options={"num_cpus": 0}).bind(entries)
        ingress_deployment: Any = serve.deployment(CascadeIngress)
        ingress = ingress_deployment.options(
            name="ingress",
            num_replicas=cfg.ingress_replicas,
            ray_actor_options={"num_cpus": 0},
            max_ongoing_requests=cfg.ingress_max_ongoing_requests,
        )
        return ingress.bind(
            self.policy.to_dict(),
            self.plan.to_dict(),
            self.family,
            self.groups,
            entries,
            self.engine_config,
            self.server,
            cfg.retries,
            cfg.retry_backoff_s,
            cfg.call_min_rows,
            cfg.call_min_wait_ms,
        )

    def start(self) -> RayDeployment:
        """Connect to (or start) Ray, deploy, and wait until the HTTP app answers ready."""
        session = self._session = self._connect()
        try:
            self._check_capacity(session.ray)
            serve: Any = importlib.import_module("ray.serve")
            cfg = self.config
            session.deployed = True
            if cfg.front == "serve":
                serve.start(http_options={"host": cfg.host, "port": cfg.port})
            else:
                serve.start(proxy_location="Disabled")
            try:
                serve.run(
                    self._application(),
                    name=cfg.app_name,
                    route_prefix="/" if cfg.front == "serve" else None,
                )
            except RuntimeError as err:
                why = failure_detail(serve, cfg.app_name)
                raise HybridServeError(
                    f"Ray Serve could not deploy the cascade: {err}" + (f" ({why})" if why else "")
                ) from err
            if cfg.front == "process":
                self._serve_here(serve)
            else:
                self.url = http_url(cfg.host, cfg.port)
            wait_ready(self.url, self._http, cfg.ready_timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _serve_here(self, serve: Any) -> None:
        """The engine over the parts' handles and its HTTP app, in this process."""
        from hybridserve.backends.ray_deployments import remote_replicas
        from hybridserve.server.app import create_app

        cfg = self.config
        handles = {
            g.deployment_name(0): serve.get_deployment_handle(g.deployment_name(0), cfg.app_name)
            for groups in self.groups.values()
            for g in groups
        }
        self.source = remote_replicas(
            self.groups,
            handles,
            cfg.retries,
            cfg.retry_backoff_s,
            cfg.call_min_rows,
            cfg.call_min_wait_ms,
        )
        self.engine = ray_engine(
            self.policy, self.plan, self.family, self.source, self.engine_config
        )
        self._serve_app(create_app(self.engine, self.server))

    @property
    def serving(self) -> bool:
        """The HTTP front is up (front 'serve': Serve's, as far as this process can tell)."""
        if self._http is not None:
            return self._http.running
        return self._session is not None and self._session.deployed

    # ------------------------------------------------------------------ operations
    def replica_actors(self, model: str) -> list[str]:
        """Actor names of the replicas serving ``model``'s first part (for ``ray.kill``)."""
        return self._replica_actors({g.deployment_name(0) for g in self.groups.get(model, [])})

    def placement(self, calls_per_replica: int = 4) -> dict[str, set[str]]:
        """The plan node each part deployment's replicas run on, as Ray reports it.

        Each part is asked ``where`` it runs (``calls_per_replica`` times per replica, so the
        router reaches every replica with high probability); Ray node ids are mapped to plan
        nodes through the device resources each node advertises.
        """
        assert self._session is not None
        serve: Any = importlib.import_module("ray.serve")
        node_of: dict[str, str] = {}
        for node in self._session.ray.nodes():
            for res in node.get("Resources", {}):
                if res.startswith(RESOURCE_PREFIX):
                    node_of[node["NodeID"]] = res[len(RESOURCE_PREFIX) :].split("/", 1)[0]
        out: dict[str, set[str]] = {}
        for groups in self.groups.values():
            for g in groups:
                for s in g.parts:
                    name = g.deployment_name(s.part)
                    where = serve.get_deployment_handle(name, self.config.app_name).options(
                        method_name="where"
                    )
                    calls = [where.remote() for _ in range(calls_per_replica * g.num_replicas)]
                    out[name] = {node_of.get(c.result()["node_id"], "?") for c in calls}
        return out


def wait_for_signal(serving: Callable[[], bool] = lambda: True) -> None:
    """Block until SIGINT or SIGTERM, or until ``serving()`` turns false."""
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(0.5) and serving():
            pass
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def serve_ray(
    policy: CascadePolicy,
    plan: Plan,
    family: FamilyRef,
    config: RayBackendConfig,
    engine: EngineConfig | None = None,
    server: ServerSettings | None = None,
    sock: socket.socket | None = None,
) -> None:
    """Deploy, print where, serve until SIGINT/SIGTERM, then drain and undeploy (the CLI's
    entry). ``sock``: the front's socket, bound before anything loads (front 'process')."""
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=True)
    with console.status("deploying on Ray Serve"):
        dep = RayDeployment(policy, plan, family, config, engine, server, sock).start()
    try:
        table = Table(title=f"{policy.family} on Ray Serve")
        for header in ("deployment", "replicas", "device", "batch", "wait ms", "share"):
            table.add_column(header)
        for d in describe_groups(dep.groups)["deployments"]:
            for s in d["parts"]:
                table.add_row(
                    s["deployment"],
                    str(d["replicas"]),
                    s["device"],
                    str(s["batch_size"]),
                    f"{s['max_wait_ms']:g}",
                    f"{s['device_share']:g}",
                )
        console.print(table)
        console.print(f"serving at {dep.url} (Ctrl-C stops)", highlight=False)
        wait_for_signal(lambda: dep.serving)
    finally:
        dep.stop()
    if not dep.serving and dep.failure is not None:
        raise HybridServeError(dep.failure)


def family_ref(target: ServeTarget) -> FamilyRef:
    """The target's family as Ray actors load it: a bundled name, or the user's YAML file."""
    config = target.config
    return FamilyRef(target.family_name, None if config is None else str(config))


def serve_options(options: ServeOptions, target: ServeTarget) -> None:
    """``hybridserve serve --backend ray``: serve the resolved ``target`` on Ray.

    ``options.address`` None starts a local Ray instance. The port is bound first, so a taken
    port is reported in a second; with front 'process' this process keeps it and serves on
    it, with front 'serve' it is released for Serve's proxies (they need a fixed port, so 0
    picks a free one here).
    """
    require_ray()
    sock = bind_port(options.host, options.port)
    port = int(sock.getsockname()[1])
    config = RayBackendConfig(
        address=options.address, host=options.host, port=port, front=options.ray_front
    )
    if config.front == "serve":
        sock.close()
    policy, plan, family = target.policy, target.plan, family_ref(target)
    with sock:
        kept = sock if config.front == "process" else None
        serve_ray(policy, plan, family, config, options.engine, options.server, kept)
