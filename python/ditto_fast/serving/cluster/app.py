"""The Ray Serve application: an ingress deployment (serving/app.py over a ClusterEngine) in front
of the EngineReplica deployment, and the relay actor they share.

    build_application(ClusterConfig(...))   the Application, for serve.run
    app_builder(args)                        the same from a Serve config file's `args`
                                             (deploy/ray-serve.yaml: `serve run deploy/ray-serve.yaml`)
    run_cluster(config, host, port, address) `ditto-fast serve --ray`: deploy, serve until
                                             interrupted, then drain and remove
"""

from __future__ import annotations

import dataclasses
import signal
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import ray
from ray import serve

from ditto_fast.serving.cluster.engine import ClusterEngine
from ditto_fast.serving.cluster.relay import SessionRelay
from ditto_fast.serving.cluster.replica import EngineReplica
from ditto_fast.serving.protocol import DEFAULT_LIMITS, Limits

NAMESPACE = "ditto-fast"
# Ongoing requests a replica takes beyond its sessions: uploads' registrations, renders, and the
# quick "busy" answers of sessions it refuses.
REQUEST_SLACK = 2
DRAIN_TIMEOUT_S = 60.0  # on shutdown, how long open sessions may run on before replicas are killed


@dataclass(frozen=True)
class ClusterConfig:
    """What `ditto-fast serve --ray` deploys. Replicas: `replicas` fixed, or `autoscale` =
    (min, max) on ongoing sessions, `target_sessions` per replica (default: 3/4 of
    `max_sessions`, at least 1)."""

    checkpoints: str | None = None  # a path every node sees; None: the shipped synthetic-tiny tree
    backend: str = "auto"
    device: str = "cpu"  # "cuda": one GPU per replica
    cfg: str | None = None
    frame_batch: int = 1
    threads: int | None = None
    replica_cpus: float = 1.0  # CPUs a replica reserves on a CPU-only cluster
    max_sessions: int | None = None  # per replica; None: measured at the replica's start
    max_batch: int = 8
    replicas: int = 1
    autoscale: tuple[int, int] | None = None
    target_sessions: float | None = None
    ingress_replicas: int = 1
    token: str | None = None
    session_defaults: Mapping[str, Any] = field(default_factory=dict)
    limits: Limits = DEFAULT_LIMITS
    name: str = "ditto-fast"

    def __post_init__(self) -> None:
        if self.replicas < 1 or self.ingress_replicas < 1:
            raise ValueError("replicas must be at least 1")
        if self.autoscale is not None and not 1 <= self.autoscale[0] <= self.autoscale[1]:
            raise ValueError(f"autoscale MIN:MAX needs 1 <= MIN <= MAX, got {self.autoscale[0]}:{self.autoscale[1]}")
        if self.max_sessions is not None and self.max_sessions < 1:
            raise ValueError(f"max_sessions must be at least 1, got {self.max_sessions}")

    @property
    def relay_name(self) -> str:
        return f"{self.name}-relay"


@serve.ingress()
class Ingress:
    """The single-machine app, built in the replica over a ClusterEngine."""

    def __init__(self, replicas: Any, config: ClusterConfig) -> None:
        self.config = config
        relay = ray.get_actor(config.relay_name, namespace=NAMESPACE)
        self.engine = ClusterEngine(replicas, relay, frame_timeout=config.limits.frame_timeout_s)

    def __serve_build_asgi_app__(self):
        from ditto_fast.serving.app import create_app

        return create_app(self.engine, token=self.config.token, limits=self.config.limits,
                          session_defaults=self.config.session_defaults)


def _replica_options(config: ClusterConfig) -> dict[str, Any]:
    per_replica = config.max_sessions or 1
    options: dict[str, Any] = {
        "ray_actor_options": {"num_gpus": 1} if config.device.startswith("cuda") else {"num_cpus": config.replica_cpus},
        # Ray's router then sends a replica no more than its sessions and a little slack; the
        # engine itself refuses the session past its limit at once ("busy").
        "max_ongoing_requests": (config.max_sessions or 16) + REQUEST_SLACK,
        "graceful_shutdown_timeout_s": DRAIN_TIMEOUT_S,
        "graceful_shutdown_wait_loop_s": 1.0,
    }
    if config.autoscale is None:
        options["num_replicas"] = config.replicas
    else:
        low, high = config.autoscale
        options["autoscaling_config"] = {
            "min_replicas": low, "max_replicas": high, "initial_replicas": low,
            "target_ongoing_requests": config.target_sessions or max(1.0, 0.75 * per_replica),
            "upscale_delay_s": 3.0, "downscale_delay_s": 60.0, "metrics_interval_s": 1.0,
            "look_back_period_s": 3.0,
        }
    return options


def build_application(config: ClusterConfig):
    """The Application of `config`, creating its relay actor if this cluster has none yet."""
    ray.remote(SessionRelay).options(name=config.relay_name, namespace=NAMESPACE, lifetime="detached",
                                     get_if_exists=True, num_cpus=0).remote(config.limits.max_stored_avatar_bytes)
    renderer_options = {"checkpoints": config.checkpoints, "backend": config.backend, "device": config.device,
                        "cfg": config.cfg, "frame_batch": config.frame_batch, "threads": config.threads}
    replicas = serve.deployment(EngineReplica, name="EngineReplica").options(**_replica_options(config)).bind(
        config.relay_name, NAMESPACE, renderer_options, config.max_sessions, config.max_batch)
    ingress = serve.deployment(Ingress, name="Ingress").options(
        num_replicas=config.ingress_replicas, ray_actor_options={"num_cpus": 0.1},
        max_ongoing_requests=10_000, graceful_shutdown_timeout_s=DRAIN_TIMEOUT_S)
    return ingress.bind(replicas, config)


def app_builder(args: dict[str, Any]):
    """For a Serve config file: `args` are ClusterConfig's fields (`autoscale: [1, 4]`)."""
    values = dict(args)
    if values.get("autoscale") is not None:
        values["autoscale"] = tuple(values["autoscale"])
    if "limits" in values:
        values["limits"] = Limits(**values["limits"])
    known = {f.name for f in dataclasses.fields(ClusterConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown ditto-fast cluster argument(s): {', '.join(unknown)}; "
                         f"known: {', '.join(sorted(known))}")
    return build_application(ClusterConfig(**values))


def remove(config: ClusterConfig) -> None:
    """Delete the application (replicas drain their sessions first, up to DRAIN_TIMEOUT_S) and
    its relay."""
    serve.delete(config.name)
    try:
        ray.kill(ray.get_actor(config.relay_name, namespace=NAMESPACE))
    except ValueError:  # never created, or gone already
        pass


def run_cluster(config: ClusterConfig, host: str, port: int, address: str | None = None) -> None:
    """Deploy on the cluster at `address` (None: start a local one), serve HTTP/WebSocket on
    host:port through Ray Serve's proxy until SIGINT/SIGTERM, then drain and remove."""
    ray.init(address=address, namespace=NAMESPACE, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": host, "port": port})
        serve.run(build_application(config), name=config.name, route_prefix="/")
        print(f"ditto-fast: cluster application {config.name!r} ready on http://{host}:{port}/", file=sys.stderr,
              flush=True)
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        stop.wait()
        print("ditto-fast: draining sessions …", file=sys.stderr, flush=True)
        remove(config)
    finally:
        ray.shutdown()
