"""Server CPU per ``/invocations`` request, in process: uvicorn's protocol and the app, without sockets.

The HTTP benchmark (``bench_serving.py``) measures what a client sees, but on a shared machine its
figures move by ±25 % between runs. This one drives the same stack — ``mloop serve``'s HTTP protocol
(:class:`mloop.server.protocol.LimitedHttpProtocol`) in front of the served app, on uvloop — with 64
fake connections that each send a request, wait for the whole answer and send again (as ``wrk`` does),
and reports the CPU time of the whole process (every thread: the prediction-log writer too) per
answered request. No socket system calls are made, so the figure is mloop's own work plus uvicorn's
parsing and response building; ``--noop`` measures ``noop_app.py`` the same way.

    .venv/bin/python benchmarks/serving/bench_inprocess.py --project DIR          # a trained project
    .venv/bin/python benchmarks/serving/bench_inprocess.py --project DIR --noop
    PYTHONPATH=/path/to/other/src .venv/bin/python benchmarks/serving/bench_inprocess.py --project DIR

The background monitor is off (``MLOOP_MONITORING__INTERVAL_S=0``) unless ``--monitor``; copy the
project first if its prediction log should stay as it is.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


class _Transport(asyncio.Transport):
    """What the protocol writes to: hands the bytes to the client, never blocks."""

    def __init__(self, client: _Client) -> None:
        super().__init__()
        self._client = client
        self._closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._client.received(bytes(data))

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        self._closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_reading(self) -> bool:
        return True

    def get_write_buffer_size(self) -> int:
        return 0


class _Client:
    """One closed-loop connection: send, read the whole answer (by Content-Length), send again."""

    def __init__(self, run: _Run, request: bytes) -> None:
        self.run = run
        self.request = request
        self.buffer = b""
        self.protocol: Any = None

    def start(self, protocol: Any) -> None:
        self.protocol = protocol
        protocol.connection_made(_Transport(self))
        self.protocol.data_received(self.request)

    def received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = self.buffer[:end].lower()
            at = head.find(b"content-length:")
            length = int(head[at + 15 :].split(b"\r\n", 1)[0]) if at >= 0 else 0
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            self.run.answered(int(head[9:12]))
            if not self.run.done.done():
                self.run.loop.call_soon(self.protocol.data_received, self.request)


class _Run:
    def __init__(self, loop: asyncio.AbstractEventLoop, requests: int) -> None:
        self.loop = loop
        self.requests = requests
        self.count = 0
        self.statuses: dict[int, int] = {}
        self.done: asyncio.Future[None] = loop.create_future()

    def answered(self, status: int) -> None:
        self.count += 1
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if self.count >= self.requests and not self.done.done():
            self.done.set_result(None)


async def _serve(args: argparse.Namespace) -> None:
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    settings_path = args.project / "mloop.yaml"
    lifespan = None
    if args.noop:
        sys.path.insert(0, str(HERE))
        config = Config("noop_app:app", http="httptools", log_level="warning", lifespan="off")
    else:
        from mloop.config import load_settings
        from mloop.server.app import create_app

        os.chdir(args.project)
        app = create_app(load_settings(settings_path))
        config = Config(
            app, http="mloop.server.protocol:LimitedHttpProtocol", log_level="warning", lifespan="off"
        )
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        for _ in range(1200):
            if app.state.service.ready:
                break
            await asyncio.sleep(0.1)
        else:
            raise TimeoutError(f"the model did not load within 120 s: {app.state.service.status()}")
    config.load()
    protocol_class = config.http_protocol_class

    from mloop.config import load_settings

    settings = load_settings(settings_path)
    example = json.loads(next((settings.home_dir / "artifacts").rglob("input_example.json")).read_text())
    record = dict(zip(example["columns"], example["data"][0], strict=True))
    body = json.dumps({"dataframe_records": [record]}).encode()
    request = (
        b"POST /invocations HTTP/1.1\r\nhost: 127.0.0.1:8000\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n" % len(body)
    ) + body

    loop = asyncio.get_running_loop()
    state = ServerState()
    figures = []
    for number in range(args.rounds + 1):  # round 0 warms up
        run = _Run(loop, args.requests if number else max(2000, args.requests // 4))
        clients = [_Client(run, request) for _ in range(args.connections)]
        cpu, wall = time.process_time(), time.perf_counter()
        for client in clients:
            client.start(protocol_class(config=config, server_state=state, app_state={}, _loop=loop))
        await run.done
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        await asyncio.sleep(0.2)  # let the last answers go out
        for client in clients:
            client.protocol.connection_lost(None)
        if number:
            figures.append(cpu / run.count * 1e6)
            print(
                f"round {number}: {figures[-1]:6.1f} us CPU per request, {run.count / wall:8.0f} req/s, "
                f"statuses {run.statuses}",
                flush=True,
            )
    figures.sort()
    print(f"best {figures[0]:.1f} us, median {figures[len(figures) // 2]:.1f} us CPU per request")
    if lifespan is not None:
        await lifespan.__aexit__(None, None, None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", type=Path, required=True, help="A trained mloop project.")
    ap.add_argument("--requests", type=int, default=10_000, help="Answered requests per round.")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--noop", action="store_true", help="Measure noop_app.py instead of mloop.")
    ap.add_argument("--monitor", action="store_true", help="Keep the background monitor on.")
    args = ap.parse_args()
    args.project = args.project.resolve()
    if not args.monitor:
        os.environ["MLOOP_MONITORING__INTERVAL_S"] = "0"
    import uvloop

    uvloop.install()
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
