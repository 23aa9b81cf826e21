"""Servers the end-to-end tests start as a user would (``mloop serve``, ``mloop ui``, ``mlflow models
serve``): a free port, a new process session, a wait until it answers, and a stop that takes the
whole session down.

With two pytest workers a port picked free here can be taken by another test's server before ours
binds it, and a ping would then be answered by that server (seen once: MLflow's answers came from
another model). So a server counts as up only when a process of its own session holds the listening
socket, and a server that exits before it is up (its port was taken) is started again on another port.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

__all__ = ["Server", "free_port", "listens", "mloop_server", "server", "stop", "wait_http"]


def free_port() -> int:
    """A TCP port nothing listens on right now (another process may take it before you bind it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listens(proc: subprocess.Popen[bytes], port: int) -> bool:
    """True when a process of ``proc``'s session holds the listening socket on ``port``.

    Linux only: /proc/net/tcp and the session's file descriptors."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{cols[9]}]")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[3]) != proc.pid:  # session id
                continue
            for fd in (stat.parent / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        return True
    return False


def wait_http(url: str, *, status: int = 200, timeout: float = 120, interval: float = 0.3) -> httpx.Response:
    """The first answer of ``GET url`` with ``status``, polled every ``interval`` s for a server this
    test did not start as a process of its own (a container, a server thread).

    Fails the test after ``timeout`` s with the last status or error seen."""
    deadline = time.monotonic() + timeout
    last: object = "no answer"
    while True:
        try:
            response = httpx.get(url, timeout=5)
            if response.status_code == status:
                return response
            last = f"status {response.status_code}"
        except httpx.HTTPError as exc:
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() >= deadline:
            raise AssertionError(f"{url} did not answer {status} within {timeout:g} s (last: {last})")
        time.sleep(interval)


def stop(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM to ``proc``'s whole session, SIGKILL if it is still there after ``timeout`` s."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@dataclass
class Server:
    """A started server: its process, base URL and the file its output goes to."""

    proc: subprocess.Popen[bytes]
    url: str
    port: int
    log_path: Path

    def output(self) -> str:
        """Everything the server printed so far (stdout and stderr)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _up(proc: subprocess.Popen[bytes], url: str, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(url, timeout=2).status_code == 200 and listens(proc, port):
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    return False


@contextlib.contextmanager
def server(
    command: Callable[[int], list[str]],
    cwd: Path,
    *,
    env: Mapping[str, str] | None = None,
    ready_path: str = "/ready",
    timeout: float = 120,
    log_path: Path | None = None,
    attempts: int = 3,
) -> Iterator[Server]:
    """Start ``command(port)`` in ``cwd`` and yield it once ``GET ready_path`` answers 200 from it.

    Output goes to ``log_path`` (default ``cwd/server-<port>.log``): a pipe nobody reads would
    stall a talkative server. Fails the test with the server's output when it never comes up."""
    for attempt in range(1, attempts + 1):
        port = free_port()
        path = log_path or cwd / f"server-{port}.log"
        with path.open("ab") as out:
            proc = subprocess.Popen(
                command(port),
                cwd=cwd,
                env=dict(env) if env is not None else None,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started = Server(proc, f"http://127.0.0.1:{port}", port, path)
        try:
            if _up(proc, started.url + ready_path, port, timeout):
                yield started
                return
            exited = proc.poll() is not None
        finally:
            stop(proc)
        if not exited or attempt == attempts:  # alive but never ready, or out of attempts
            raise AssertionError(
                f"{' '.join(command(port))} did not answer {ready_path} within {timeout:g} s "
                f"(attempt {attempt}):\n{started.output()[-4000:]}"
            )
        # It exited before it was up: most likely its port was taken meanwhile; try another.


def mloop_server(
    cwd: Path,
    *args: str,
    subcommand: str = "serve",
    env: Mapping[str, str] | None = None,
    ready_path: str = "/ready",
    timeout: float = 120,
    log_path: Path | None = None,
) -> contextlib.AbstractContextManager[Server]:
    """``mloop <subcommand> --port <free port> *args`` in ``cwd``, as :func:`server` starts it."""

    def command(port: int) -> list[str]:
        return [sys.executable, "-m", "mloop", subcommand, "--port", str(port), *args]

    return server(command, cwd, env=env, ready_path=ready_path, timeout=timeout, log_path=log_path)
