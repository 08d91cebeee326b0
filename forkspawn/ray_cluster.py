"""Ray as a way to start tensor-parallel workers: the cluster of a run, and ranks as Ray actors.

Ray starts every actor in a worker process that its raylet exec'd (a fresh interpreter, perhaps
prestarted before anyone asked). A run therefore has a cluster: a local head on 127.0.0.1 that
the parent starts before the start request and stops afterwards, or, with `RAY_ADDRESS` set, a
real (multi-node) cluster that is joined and left running. The start itself is: join the
cluster, create the actors, and let them run the same rank code as every other method.

`RayContext` offers the two things of a multiprocessing context that `launcher.WorkerGroup`
uses (`Pipe`, `Process`), so phases, failures and teardown are handled once, for every method.
A rank talks to the parent over a multiprocessing `Connection` on a 127.0.0.1 socket instead of
a pipe (an actor is no child of ours).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Callable, Iterator

import psutil

from . import lifecycle, machine
from .clock import now
from .launcher import GroupFailure
from .leftovers import tagged_processes
from .methods import RAY, verify
from .record import ProcessMemory

HEAD_ENV = "FORKSPAWN_RAY_HEAD"  # marks every process of a head we started, so it can be stopped exactly
# Unix socket paths (<temp dir>/session_<date>_<pid>/sockets/plasma_store, up to 62 bytes
# below the temp dir) must stay under 108 bytes: the head's temp dir may have 45 at most.
MAX_TEMP_DIR = 45
TEMP_PREFIX = "forkspawn-ray-"  # + 8 random characters (mkdtemp)
_running_head: str | None = None  # the marker of the head this process started, while it runs


def unavailable() -> str | None:
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        return "Ray is not installed in this environment (pip install ray)"
    return None


# For the head and every Ray client of the run. Ray replaces a 127.0.0.1 node address by the
# host's "reachable" one and binds all interfaces unless told not to; a local ray.init would
# switch token auth on and write ~/.ray/auth_token.
LOCAL_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled",
             "RAY_USAGE_STATS_ENABLED": "0", "RAY_enable_metrics_collection": "0"}


def for_run(config: Any, head: dict[str, Any]) -> contextlib.AbstractContextManager:
    """The cluster a run of `config` needs, outside its timed region: none but for the `ray`
    method, and then with what the engine adapter asks of a local head (`head`, its
    `ray_head(config)`: env, resources; the caller asks, so that Ray knows no adapter)."""
    if config.method != RAY:
        return contextlib.nullcontext()
    gpus = len(machine.gpus()) if config.device == "cuda" else 0
    return cluster(len(os.sched_getaffinity(0)), gpus, **head)


@contextlib.contextmanager
def cluster(num_cpus: int, num_gpus: int, env: dict[str, str] | None = None,
            resources: dict[str, float] | None = None) -> Iterator[dict[str, Any]]:
    """The run's cluster, as {"address", "local", "start_s"}; RAY_ADDRESS points at it meanwhile.

    A local head is started with the dashboard, metrics export and usage stats off, every port
    on 127.0.0.1, and a temp dir of its own; it is stopped (all its processes, found by a marker
    in their environment) and its temp dir removed, also when the run fails. `env` is added to
    the environment of the head (so of every Ray worker) and of this process; `resources` are
    custom resources the head advertises.
    """
    saved = {k: os.environ.get(k) for k in {**LOCAL_ENV, **(env or {})}}
    os.environ.update({**LOCAL_ENV, **(env or {})})
    try:
        if os.environ.get("RAY_ADDRESS"):
            yield {"address": os.environ["RAY_ADDRESS"], "local": False, "start_s": None}
        else:
            with _local_head(num_cpus, num_gpus, resources) as head:
                yield head
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


@contextlib.contextmanager
def _local_head(num_cpus: int, num_gpus: int, resources: dict[str, float] | None) -> Iterator[dict[str, Any]]:
    global _running_head
    marker = uuid.uuid4().hex
    temp = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=_short_tmp()))
    port = machine.free_port()
    env = {**os.environ, HEAD_ENV: marker}
    cmd = [str(Path(sys.executable).with_name("ray")), "start", "--head", "--node-ip-address=127.0.0.1",
           f"--port={port}", "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}",
           f"--num-cpus={num_cpus}", f"--num-gpus={num_gpus}"] + ([f"--resources={json.dumps(resources)}"] * bool(resources))
    t0 = now()
    try:
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"`ray start --head` failed: {(out.stderr or out.stdout).strip()[-500:]}")
        os.environ["RAY_ADDRESS"], _running_head = f"127.0.0.1:{port}", marker
        yield {"address": os.environ["RAY_ADDRESS"], "local": True, "start_s": now() - t0}
    finally:
        os.environ.pop("RAY_ADDRESS", None)
        _running_head = None
        _disconnect()
        stop(marker)
        shutil.rmtree(temp, ignore_errors=True)


def stop(marker: str, grace_s: float = 1.0, gone_s: float = 15.0) -> None:
    """Stop every process of the head marked `marker`: SIGTERM, SIGKILL after `grace_s`, then
    wait up to `gone_s` until the killed ones are gone.

    A short grace: the GCS and raylet take more than 5 s to honour SIGTERM on 2 cores (5 s of
    every Ray cold start), and what they would flush lives in the temp dir removed next. The wait
    after SIGKILL ends as soon as they are gone; on a loaded box their exit (and reaping by init,
    whose children they are) can take seconds."""
    # late: any worker started meanwhile is killed too
    lifecycle.terminate(head_processes(marker), grace_s, gone_s, late=lambda: head_processes(marker))


def head_processes(marker: str) -> list[psutil.Process]:
    """The processes of a head: those carrying its marker, and their descendants (Ray's agents
    and actors rename themselves with setproctitle, which hides their environment)."""
    found = {p.pid: p for p in tagged_processes(HEAD_ENV, marker)}
    for p in list(found.values()):
        with contextlib.suppress(psutil.Error):
            found.update((c.pid, c) for c in p.children(recursive=True))
    return [found[pid] for pid in sorted(found)]


def own_processes(exclude: set[int]) -> list[ProcessMemory]:
    """The processes of the local head this process started (`exclude`: our ranks), with roles
    named after what they do: ray-gcs, ray-raylet, Ray's agents and idle workers (numbered)."""
    found: list[ProcessMemory] = []
    counts: dict[str, int] = {}
    procs = head_processes(_running_head) if _running_head else []
    for p in procs:
        if p.pid in exclude:  # and what our ranks started themselves
            with contextlib.suppress(psutil.Error):
                exclude = exclude | {c.pid for c in p.children(recursive=True)}
    for p in procs:
        if p.pid in exclude:
            continue
        with contextlib.suppress(psutil.Error):
            name = _role(p)
            n = counts[name] = counts.get(name, -1) + 1
            role = f"ray-{name}" + (f"-{n}" if n else "")
            found.append(ProcessMemory(role, None, p.pid, started_by=verify.started_by(p.pid)))
    return found


def _role(p: psutil.Process) -> str:
    cmd = " ".join(p.cmdline())
    for key, name in (("gcs_server", "gcs"), ("raylet", "raylet"), ("DashboardAgent", "dashboard-agent"),
                      ("RuntimeEnvAgent", "runtime-env-agent"), ("dashboard.py", "dashboard"),
                      ("log_monitor", "log-monitor"), ("monitor.py", "monitor"), ("ray::IDLE", "idle-worker"),
                      ("client.server", "client-server"), ("default_worker", "worker")):
        if key in cmd:
            return name
    return p.name()


def _short_tmp() -> str:
    """TMPDIR if short enough for Ray's socket paths (a measurement's own may be deep), else /tmp."""
    tmp = tempfile.gettempdir()
    return tmp if len(tmp) + 1 + len(TEMP_PREFIX) + 8 <= MAX_TEMP_DIR else "/tmp"


def _disconnect() -> None:
    if "ray" in sys.modules:
        import ray

        with contextlib.suppress(Exception):
            ray.shutdown()


class RayContext:
    """What `launcher.WorkerGroup` needs of a multiprocessing context, with ranks as Ray actors."""

    def __init__(self) -> None:
        self.joined_s: float | None = None  # CLOCK_MONOTONIC when the parent had joined the cluster

    def Pipe(self) -> tuple["PeerConnection", "Endpoint"]:
        server = socket.create_server(("127.0.0.1", 0))
        mine = PeerConnection(server, secrets.token_hex(16))
        return mine, Endpoint(server.getsockname(), mine.token, mine)

    def Process(self, target: Callable, args: tuple, name: str) -> "RayProcess":
        return RayProcess(self, target, args, name)

    def join(self) -> Any:
        """Connect this process to the cluster once (the first rank's start pays for it)."""
        import ray

        if not ray.is_initialized():
            address = os.environ.get("RAY_ADDRESS") or "auto"
            _check_answers(address)
            try:
                ray.init(address=address, logging_level="WARNING", log_to_driver=False, configure_logging=False)
            except Exception as exc:
                raise GroupFailure("error", f"Ray: cannot join the cluster at {address}: {exc}") from exc
            self.joined_s = now()
        return ray


def _check_answers(address: str, timeout_s: float = 10.0) -> None:
    """Fail fast on a host:port that accepts no connection (ray.init would retry for minutes)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return  # "auto", ray:// and the like: left to Ray
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise GroupFailure("error", f"Ray: the cluster at RAY_ADDRESS={address} does not answer ({exc})") from None


class Endpoint:
    """The rank's end of the connection: where to connect, and the token proving it is ours."""

    def __init__(self, address: tuple, token: str, mine: "PeerConnection"):
        self.address, self.token, self.mine = address, token, mine

    def close(self) -> None:  # WorkerGroup closes "their" end after starting the rank
        pass


class PeerConnection:
    """The parent's end: waits on the listening socket until the actor connected, then on the connection.

    `multiprocessing.connection.wait` accepts it (it has `fileno`); the first `recv` accepts the
    actor's connection and checks its hello (token, PID) before returning the rank's first message.
    """

    def __init__(self, server: socket.socket, token: str):
        self.server, self.token = server, token
        self.conn: Connection | None = None
        self.pid: int | None = None

    def fileno(self) -> int:
        return self.conn.fileno() if self.conn else self.server.fileno()

    def _accept(self) -> Connection:
        if self.conn is None:
            sock, _ = self.server.accept()
            conn = Connection(sock.detach())
            if not conn.poll(30):
                raise EOFError("the actor connected but never said who it is")
            hello = conn.recv()
            if hello[:2] != ("hello", self.token):
                conn.close()
                raise EOFError("a connection without our token")
            self.conn, self.pid = conn, hello[2]
            self.server.close()
        return self.conn

    def recv(self) -> Any:
        return self._accept().recv()

    def poll(self, timeout: float = 0.0) -> bool:
        return self.conn.poll(timeout) if self.conn else False

    def send(self, obj: Any) -> None:
        if self.conn is None:
            raise OSError("the actor has not connected")
        self.conn.send(obj)

    def close(self) -> None:
        if self.conn:
            self.conn.close()
        self.server.close()


class RayProcess:
    """A rank as a Ray actor, with the `multiprocessing.Process` surface WorkerGroup uses.

    Its PID is known once the actor connected; until then its sentinel never fires (a dead
    actor then shows as a timeout). Not our child: its exit status is unknown (`exitcode` None).
    """

    exitcode = None

    def __init__(self, ctx: RayContext, target: Callable, args: tuple, name: str):
        spec, self.endpoint = args
        self.ctx, self.target, self.name = ctx, target, name
        self.spec = {**spec, "device_index": 0} if spec["device"] == "cuda" else spec  # Ray narrows CUDA_VISIBLE_DEVICES to the actor's GPU
        self.actor = None
        self._never = os.pipe()
        self._pidfd: int | None = None

    @property
    def pid(self) -> int | None:
        return self.endpoint.mine.pid

    def start(self) -> None:
        ray = self.ctx.join()
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        # On this node, also in a multi-node cluster: the ranks meet (and reach the parent) on 127.0.0.1
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        resources = {"num_cpus": 1, "num_gpus": 1 if self.spec["device"] == "cuda" else 0}
        self.actor = ray.remote(RankActor).options(name=f"{self.name}-{uuid.uuid4().hex[:8]}", scheduling_strategy=here,
                                                   **resources).remote()
        self.actor.run.remote(self.target, self.spec, self.endpoint.address, self.endpoint.token)

    @property
    def sentinel(self) -> int:
        if self.pid is None:
            return self._never[0]
        if self._pidfd is None:
            try:
                self._pidfd = os.pidfd_open(self.pid)
            except ProcessLookupError:
                return self._never[1]  # already gone: the write end of a pipe is always ready
        return self._pidfd

    def is_alive(self) -> bool:
        if self.pid is None:
            return self.actor is not None
        try:
            return psutil.Process(self.pid).status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def join(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.is_alive() and self.pid is not None and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.02)

    def kill(self) -> None:
        if self.actor is not None:
            with contextlib.suppress(Exception):
                import ray

                ray.kill(self.actor, no_restart=True)
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        self.actor = None

    def __del__(self) -> None:
        for fd in (*self._never, self._pidfd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)


class RankActor:
    """The Ray actor of one rank (decorated with `ray.remote` when used, so Ray stays optional)."""

    def run(self, target: Callable, spec: dict, address: tuple, token: str) -> None:
        from multiprocessing.connection import Client

        conn = Client(address)
        conn.send(("hello", token, os.getpid()))
        try:
            target(spec, conn)
        finally:
            conn.close()
            # The rank is done: end its process as a multiprocessing child would end.
            import ray

            ray.actor.exit_actor()
