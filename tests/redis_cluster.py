"""A real Redis Cluster on loopback for the tests: three primaries, one replica each.

``LocalCluster.start()`` picks six free ports whose cluster bus ports (port + 10000) are
free too, starts a ``redis-server --cluster-enabled yes`` on each (no persistence, a
``cluster-node-timeout`` of 1 s so that a failover takes a second or two), joins them with
``redis-cli --cluster create … --cluster-replicas 1`` and waits until every node says
``cluster_state:ok`` and every replica is in sync. ``stop()`` shuts the nodes down and
removes their directory. ``benchmarks/scaling.py`` starts its cluster with it too, with
production's persistence (``persistent=True``: AOF ``everysec``, ``noeviction``).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis
from redis.cluster import RedisCluster

NODE_TIMEOUT_MS = 1000


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_cluster_ports(count: int) -> list[int]:
    """``count`` free loopback ports whose bus ports (port + 10000) are free too."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 10000 < 65536 and port not in ports and _free(port + 10000):
            ports.append(port)
        elif port > 55000:  # the kernel's range sits high: take the band below it
            for candidate in range(20000 + os.getpid() % 5000, 40000):
                if len(ports) == count:
                    break
                if candidate not in ports and _free(candidate) and _free(candidate + 10000):
                    ports.append(candidate)
    return ports


class LocalCluster:
    """Six ``redis-server`` processes in cluster mode, in a temporary directory.

    ``persistent``: AOF ``everysec`` and ``noeviction``, as production runs (the scaling
    benchmark); else no persistence (the tests). ``node_timeout_ms``: how long a node may
    be silent before its replica takes over.
    """

    def __init__(
        self,
        *,
        persistent: bool = False,
        node_timeout_ms: int = NODE_TIMEOUT_MS,
        parent: Path | None = None,
    ) -> None:
        self.ports = free_cluster_ports(6)
        self.persistent = persistent
        self.node_timeout_ms = node_timeout_ms
        self.dir = Path(tempfile.mkdtemp(prefix="riskscore-cluster-", dir=parent)).resolve()
        atexit.register(self.stop)

    @property
    def url(self) -> str:
        """The service's ``RISKSCORE_REDIS_URL`` for this cluster (every node named)."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def node(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_timeout=2)

    def launch(self, port: int) -> None:
        """Start the node of ``port`` (again: it rejoins with its ``nodes-<port>.conf``)."""
        subprocess.run(
            [
                "redis-server",
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(self.dir / f"nodes-{port}.conf"),
                "--cluster-node-timeout", str(self.node_timeout_ms),
                "--save", "",
                "--repl-diskless-sync-delay", "0",  # a rejoining replica syncs at once
                *(
                    [
                        "--appendonly", "yes",
                        "--appendfsync", "everysec",
                        "--appenddirname", f"aof-{port}",
                        "--maxmemory-policy", "noeviction",
                    ]
                    if self.persistent
                    else ["--appendonly", "no"]
                ),
                "--daemonize", "yes",
                "--dir", str(self.dir),
                "--pidfile", str(self.dir / f"{port}.pid"),
                "--logfile", str(self.dir / f"{port}.log"),
            ],
            check=True,
        )  # fmt: skip

    def start(self) -> LocalCluster:
        for port in self.ports:
            self.launch(port)
        for port in self.ports:
            self._wait(lambda p=port: self.node(p).ping())
        subprocess.run(
            [
                "redis-cli", "--cluster", "create",
                *(f"127.0.0.1:{p}" for p in self.ports),
                "--cluster-replicas", "1", "--cluster-yes",
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip
        self.wait_ok()
        return self

    def _wait(self, check, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(redis.RedisError, OSError):
                if check():
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"cluster in {self.dir} did not get ready")
            time.sleep(0.05)

    def alive(self) -> list[int]:
        """The ports whose server process is running."""
        return [p for p in self.ports if self.pid(p) is not None]

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every node runs, says ``cluster_state:ok``, and every replica is in sync.

        Every node is asked in the same pass, after its process was found running: a node
        just launched again (its pidfile not written yet) must not be left out of the
        pass and then counted as present.
        """

        def ready() -> bool:
            if len(self.alive()) != len(self.ports):
                return False
            primaries = 0
            for port in self.ports:
                node = self.node(port)
                try:
                    if node.cluster("info")["cluster_state"] != "ok":
                        return False
                    info = node.info("replication")
                finally:
                    node.close()
                if info["role"] == "master":
                    primaries += 1
                elif info.get("master_link_status") != "up":
                    return False
            return primaries == 3

        self._wait(ready, timeout)

    def primaries(self) -> list[int]:
        """The ports of the live primaries."""
        return [p for p in self.alive() if self.role(p) == "master"]

    def role(self, port: int) -> str:
        return str(self.node(port).info("replication")["role"])

    def pid(self, port: int) -> int | None:
        try:
            pid = int((self.dir / f"{port}.pid").read_text())
        except (OSError, ValueError):
            return None
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return None
        return None if state == "Z" else pid  # a killed node nobody reaped yet is gone

    def primary_of(self, key: str) -> int:
        """The port of the primary that holds ``key``'s slot now."""
        client = RedisCluster(host="127.0.0.1", port=self.alive()[0])
        try:
            return int(client.get_node_from_key(key).port)
        finally:
            client.close()

    def replica_of(self, primary: int) -> int:
        for port in self.alive():
            info = self.node(port).info("replication")
            if info["role"] == "slave" and int(info["master_port"]) == primary:
                return port
        raise LookupError(f"no replica of 127.0.0.1:{primary}")

    def kill(self, port: int) -> None:
        """SIGKILL the node: no goodbye, as a crashed machine."""
        pid = self.pid(port)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)

    def _own_processes(self) -> list[int]:
        """Every process running in this cluster's directory (its nodes, whatever pidfiles say)."""
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if Path(os.readlink(entry / "cwd")) == self.dir:
                        found.append(int(entry.name))
        return found

    def stop(self) -> None:
        """Kill every node and remove the directory (also run at exit, should pytest not)."""
        if not self.dir.exists():
            return
        pids = {self.pid(port) for port in self.ports} | set(self._own_processes())
        for pid in pids - {None, os.getpid()}:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)  # type: ignore[arg-type]
        shutil.rmtree(self.dir, ignore_errors=True)
