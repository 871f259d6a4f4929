"""Running past one machine on Ray (the ``ray`` extra): connecting, and the sharded novelty index.

Nothing here is imported unless a run chooses ``executor = "ray"``; without the extra, choosing it is
a one-line error naming the extra.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from ..errors import UserError, require_extra

# How long this process took to connect to Ray (or to start a local one); 0 until it has.
connect_seconds = 0.0


def require_ray() -> None:
    """The one-line error (exit 2) naming the extra when Ray is not installed. Ray is looked for,
    not imported: importing it fixes its settings (``connect`` may set one first)."""
    import importlib.util

    try:
        found = importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):  # a module entry that is not a module
        found = False
    if not found:
        require_extra("ray", ("ray",), "the ray executor")


def _token_available() -> bool:
    """Whether this machine has a Ray cluster token where Ray looks for one."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return True
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
    return Path(path).is_file()


def connect(address: str, num_cpus: int | None = None):
    """Ray, connected: ``address`` "auto" (the cluster this machine belongs to), a cluster address
    (``ray://host:10001`` or ``host:6379``), or empty to start a local Ray on this machine (with
    ``num_cpus`` CPUs; None: all of them). Returns the ``ray`` module."""
    require_ray()
    if address and "RAY_AUTH_MODE" not in os.environ and _token_available():
        # A cluster started with `ray start` uses token authentication (Ray's default), and a driver
        # that joins it sends the token only in token mode: say so (before Ray reads its settings).
        os.environ["RAY_AUTH_MODE"] = "token"
    import ray

    global connect_seconds
    # Ray announces on stderr that the local cluster it starts uses token authentication (its
    # default): a line for every run that says nothing about the run.
    logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)
    if not ray.is_initialized():
        t0 = time.perf_counter()
        try:
            ray.init(
                # "local": a new Ray on this machine, even where an earlier cluster left its address behind
                address=address or "local",
                num_cpus=None if address else num_cpus,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.ERROR,
                configure_logging=False,
            )
        except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as e:
            raise UserError(f"setting 'ray.address' ({address or 'a local Ray'}): {e}") from None
        connect_seconds = time.perf_counter() - t0
    return ray


# What a backend reads from the environment (pipeline.create_backend): a worker on another node
# has its own environment, so the driver's values travel with the work.
FORWARDED_ENV = ("OPENAI_API_KEY", "OPENAI_BASE_URL")


def worker_options() -> dict:
    """Ray options for actors and tasks that make a backend: the driver's API settings."""
    env = {name: os.environ[name] for name in FORWARDED_ENV if os.environ.get(name)}
    return {"runtime_env": {"env_vars": env}} if env else {}


def cpu_share(ray, n: int) -> float:
    """CPUs for each of ``n`` actors or tasks: one each, or a share of what is free (one that asks for
    more than the cluster has free waits until it has)."""
    return min(1.0, ray.available_resources().get("CPU", 0.0) / n)


def pool_index(cfg):
    """The bootstrap pool index for ``executor = "ray"``: the exact novelty index sharded across the
    cluster, ``ray.shards`` actors (0: one per CPU of the cluster, at most ``ray.max_shards``)."""
    from .novelty import ShardedNoveltyIndex

    ray = connect(cfg.ray.address)
    t0 = time.perf_counter()
    cpus = int(ray.cluster_resources().get("CPU", 1))
    shards = cfg.ray.shards or max(1, min(cfg.ray.max_shards, cpus))
    b = cfg.bootstrap
    index = ShardedNoveltyIndex(ray, shards, b.similarity_threshold, b.tokenizer, cpus=cpu_share(ray, shards))
    index.add_many([])  # the actors are up
    index.startup_seconds = time.perf_counter() - t0
    return index
