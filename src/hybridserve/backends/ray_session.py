"""What every hybridserve deployment on Ray Serve shares: the connection to Ray and its undoing,
a deploy failure's reason, the HTTP front in this process and its readiness, and the replicas'
actors (``ServedOnRay``, the base of both deployments).

Used by the classifier deployment (``ray_backend.RayDeployment``) and the generative one
(``ray_genbackend.RayGenerativeDeployment``). The ``ray`` module is passed in (the caller has
checked the extra), so nothing here imports Ray.
"""

from __future__ import annotations

import importlib
import socket
import time
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from hybridserve.errors import HybridServeError

if TYPE_CHECKING:
    from hybridserve.backends.local import ServerThread

#: Settings of a local Ray instance. Ray runs workers at nice 15 by default; here they *are* the
#: server, so they get the priority the local backend's process has. Arguments up to 4 MiB
#: travel inside the call instead of through the object store: a batch of inputs is a few
#: hundred kB, and the store's put and get cost about 2 ms of CPU per call
#: (``ray start --system-config`` sets the same on a cluster).
LOCAL_SYSTEM_CONFIG: dict[str, Any] = {
    "worker_niceness": 0,
    "max_direct_call_object_size": 4 * 1024 * 1024,
    "task_rpc_inlined_bytes_limit": 16 * 1024 * 1024,
}
#: Lets an actor see every GPU of its node, so a ``cuda:N`` device is the real GPU N.
NOSET_CUDA = "RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES"


@dataclass
class RaySession:
    """This process's link to Ray, and what it started there (``close`` undoes only that)."""

    ray: ModuleType
    #: a local instance started here: Serve and Ray stop with the session
    started: bool = False
    #: ``ray.init`` was called here (else the caller's session is reused, and kept)
    connected: bool = False
    #: Serve was started or the application deployed
    deployed: bool = False

    @classmethod
    def open(
        cls,
        ray: ModuleType,
        address: str | None,
        *,
        num_cpus: int | None = None,
        object_store_bytes: int | None = None,
        resources: dict[str, float] | None = None,
    ) -> RaySession:
        """Join the cluster at ``address``, or start a local instance with these resources."""
        if ray.is_initialized():
            return cls(ray)
        if address is None:
            try:
                ray.init(
                    num_cpus=num_cpus,
                    object_store_memory=object_store_bytes,
                    resources=resources,
                    include_dashboard=False,
                    log_to_driver=False,
                    _system_config=LOCAL_SYSTEM_CONFIG,
                )
            except Exception as err:  # Ray raises bare Exceptions when its processes fail
                ray.shutdown()  # whatever part of the instance came up
                raise HybridServeError(f"could not start a local Ray instance: {err}") from err
            return cls(ray, started=True, connected=True)
        try:
            ray.init(address=address, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise HybridServeError(f"cannot reach Ray at {address!r}: {err}") from err
        return cls(ray, connected=True)

    def close(self, app_name: str) -> None:
        """Undeploy ``app_name`` (all of Serve when the instance is this session's) and
        disconnect (stopping a local instance started here)."""
        if not self.ray.is_initialized():
            return
        try:
            if self.deployed:
                serve: Any = importlib.import_module("ray.serve")
                if self.started:
                    serve.shutdown()
                else:
                    serve.delete(app_name)
        finally:
            if self.connected:
                self.ray.shutdown()  # stops a local instance; only disconnects from a cluster
            self.started = self.connected = self.deployed = False

    def replica_actors(self, app_name: str, deployments: set[str]) -> list[str]:
        """Actor names of the replicas of ``deployments`` (for ``ray.kill``)."""
        prefix = f"SERVE_REPLICA::{app_name}#"
        found = []
        for actor in self.ray.util.list_named_actors(all_namespaces=True):
            name = str(actor["name"])
            if name.startswith(prefix) and name[len(prefix) :].rsplit("#", 1)[0] in deployments:
                found.append(name)
        return sorted(found)

    def kill_replica(self, actor_name: str) -> None:
        """Kill one replica actor; Serve notices and starts a replacement."""
        self.ray.kill(self.ray.get_actor(actor_name, namespace="serve"), no_restart=True)


def running_replicas(app_name: str) -> dict[str, int]:
    """RUNNING replicas per deployment of the application."""
    serve: Any = importlib.import_module("ray.serve")
    app = serve.status().applications.get(app_name)
    if app is None:
        return {}
    return {name: int(d.replica_states.get("RUNNING", 0)) for name, d in app.deployments.items()}


def failure_detail(serve: Any, app_name: str) -> str:
    """The last line of each failed deployment's error (a replica constructor's exception)."""
    try:
        app = serve.status().applications.get(app_name)
    except Exception:  # the controller may be gone; the caller's error still stands
        return ""
    if app is None:
        return ""
    reasons = []
    for name, d in app.deployments.items():
        lines = [ln.strip() for ln in str(d.message or "").splitlines() if ln.strip()]
        if str(d.status).endswith(("UNHEALTHY", "DEPLOY_FAILED")) and lines:
            reasons.append(f"{name}: {lines[-1]}")
    return "; ".join(reasons)


def http_url(host: str, port: int) -> str:
    """Where a client reaches a front bound to ``host:port``."""
    host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return f"http://{host}:{port}"


def wait_ready(url: str, http: ServerThread | None, timeout_s: float) -> None:
    """Poll ``url``'s readiness until it answers 200; one line saying why not otherwise."""
    deadline = time.monotonic() + timeout_s
    detail = "no answer"
    while time.monotonic() < deadline:
        if http is not None and http.failure is not None:
            detail = http.failure
            break
        try:
            r = httpx.get(f"{url}/v2/health/ready", timeout=5.0)
            if r.status_code == 200:
                return
            detail = str(r.json().get("detail") or r.status_code)
        except (httpx.HTTPError, ValueError) as err:
            detail = str(err)
        if detail.startswith("engine failed"):
            break
        time.sleep(0.2)
    raise HybridServeError(f"the Ray deployment did not become ready: {detail}")


_D = TypeVar("_D", bound="ServedOnRay")


class ServedOnRay:
    """The part of a deployment on Ray that both kinds share once deployed: the HTTP front in
    this process (``_serve_app``), the session, stopping (drain, undeploy, stop what was
    started) and the replicas' actors. Subclasses deploy (``start``) and set ``config``
    (a ``ray_backend.RayBackendConfig``) and ``engine_config``."""

    config: Any
    engine_config: Any

    def __init__(self, sock: socket.socket | None) -> None:
        self.url = ""
        self._sock = sock
        self._http: ServerThread | None = None
        self._failure: str | None = None
        self._session: RaySession | None = None

    def start(self: _D) -> _D:
        raise NotImplementedError

    def _serve_app(self, app: Any) -> None:
        """Serve ``app`` in a thread of this process, on the socket given or bound now."""
        from hybridserve.backends import bind_port
        from hybridserve.backends.local import ServerThread

        cfg = self.config
        if self._sock is None:
            self._sock = bind_port(cfg.host, cfg.port)
        port = int(self._sock.getsockname()[1])
        self._http = ServerThread(app, self._sock).start()
        self.url = http_url(cfg.host, port)

    @property
    def failure(self) -> str | None:
        """Why the front's engine could not start (None: it did, has not yet, or no front)."""
        return self._http.failure if self._http is not None else self._failure

    @property
    def serving(self) -> bool:
        """The HTTP front in this process is up."""
        return self._http is not None and self._http.running

    def stop(self) -> None:
        """Drain and stop the HTTP front; undeploy; stop Serve and Ray when started here."""
        if self._http is not None:
            self._http.stop(self.engine_config.drain_timeout_s + 5.0)
            self._failure = self._http.failure
            self._http = None
        if self._session is not None:
            session, self._session = self._session, None
            session.close(self.config.app_name)

    def __enter__(self: _D) -> _D:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _replica_actors(self, deployments: set[str]) -> list[str]:
        if self._session is None:
            return []
        app_name: str = self.config.app_name
        return self._session.replica_actors(app_name, deployments)

    def kill_replica(self, actor_name: str) -> None:
        """Kill one replica actor; Serve notices and starts a replacement."""
        assert self._session is not None
        self._session.kill_replica(actor_name)

    def running_replicas(self) -> dict[str, int]:
        """RUNNING replicas per deployment of the application."""
        return running_replicas(self.config.app_name)
