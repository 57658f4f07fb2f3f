"""A TCP proxy whose outage you control, for fault injection (scripts/chaos.py puts it in front of PostgreSQL).

`TcpProxy(target_host, target_port).start()` listens on 127.0.0.1 (a free port unless given) and forwards each
connection to the target, in an asyncio loop on a background thread. From any thread:

- `set_mode("forward")`: the normal state;
- `set_mode("reset")`: every new connection is accepted and reset at once (RST): the client sees the server as
  unreachable immediately, as with a refused connection;
- `set_mode("blackhole")`: new connections are accepted and whatever they send is swallowed, nothing is ever
  answered: the client hangs until its own timeout, as with a partitioned network;
- `cut()`: reset every connection open now, both sides (returns how many);
- `stop()`: close the listener and every connection.

A connection the target refuses is reset as well. `python -m scripts.tcp_proxy --target 127.0.0.1:5432 --port 15432`
runs one in the foreground: SIGUSR1 cuts every connection and resets new ones, SIGUSR2 forwards again.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import struct
import threading
from concurrent.futures import Future
from typing import Self

MODES = ("forward", "reset", "blackhole")
CHUNK = 65536


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0) instead of FIN, so the peer sees a connection reset."""
    sock = writer.get_extra_info("socket")
    try:
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    writer.transport.abort()


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, listen_host: str = "127.0.0.1", listen_port: int = 0):
        self.target = (target_host, target_port)
        self.listen = (listen_host, listen_port)
        self.port: int | None = None
        self.mode = "forward"
        self.counts = {"accepted": 0, "forwarded": 0, "reset": 0, "blackholed": 0, "cut": 0, "target_refused": 0}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[tuple[asyncio.StreamWriter, ...]] = set()

    # --- control, from any thread ---

    def start(self, timeout: float = 10.0) -> Self:
        ready: Future = Future()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="tcp-proxy", daemon=True)
        self._thread.start()
        ready.result(timeout=timeout)
        return self

    @property
    def address(self) -> str:
        return f"{self.listen[0]}:{self.port}"

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self.mode = mode

    def cut(self) -> int:
        """Reset every open connection (client and target side); how many there were."""
        return self._call(self._cut_all)

    def open_connections(self) -> int:
        return self._call(lambda: len(self._connections))

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        if self._loop.is_running():
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_) -> None:
        self.stop()

    def _call(self, function):
        if self._loop is None:
            raise RuntimeError("the proxy is not running")

        async def run():
            return function()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=10)

    # --- the loop ---

    def _run(self, ready: Future) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        try:
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._handle, self.listen[0], self.listen[1], reuse_address=True)
            )
            self.port = self._server.sockets[0].getsockname()[1]
        except BaseException as error:  # hand the failure to start()
            ready.set_exception(error)
            self._loop.close()
            return
        ready.set_result(self.port)
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        self._cut_all()

    def _cut_all(self) -> int:
        connections = list(self._connections)
        for writers in connections:
            for writer in writers:
                _reset(writer)
        self._connections.clear()
        self.counts["cut"] += len(connections)
        return len(connections)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.counts["accepted"] += 1
        mode = self.mode
        if mode == "reset":
            self.counts["reset"] += 1
            _reset(writer)
            return
        if mode == "blackhole":
            self.counts["blackholed"] += 1
            entry: tuple[asyncio.StreamWriter, ...] = (writer,)
            self._connections.add(entry)
            try:
                while await reader.read(CHUNK):
                    pass
            except (ConnectionError, OSError):
                pass
            finally:
                self._connections.discard(entry)
                writer.transport.abort()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            self.counts["target_refused"] += 1
            _reset(writer)
            return
        self.counts["forwarded"] += 1
        connection = self._opened_connection()
        entry = (writer, upstream_writer)
        self._connections.add(entry)
        try:
            await asyncio.gather(
                self._pipe(reader, upstream_writer, connection, from_client=True),
                self._pipe(upstream_reader, writer, connection, from_client=False),
            )
        finally:
            self._connections.discard(entry)
            writer.transport.abort()
            upstream_writer.transport.abort()

    def _opened_connection(self) -> object:
        """What a subclass keeps about one forwarded connection (handed to `_forwarding`); nothing here."""
        return None

    def _forwarding(self, data: bytes, connection: object, from_client: bool) -> None:
        """Called with every chunk as it is forwarded, on the proxy's loop: a subclass's hook
        (scripts/roundtrips.py counts round trips with it)."""

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, connection: object, from_client: bool
    ) -> None:
        try:
            while data := await reader.read(CHUNK):
                self._forwarding(data, connection, from_client)
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except (ConnectionError, OSError, RuntimeError):
            writer.transport.abort()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="host:port to forward to")
    parser.add_argument("--port", type=int, default=0, help="port to listen on, 127.0.0.1 (0: a free one)")
    args = parser.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    proxy = TcpProxy(host or "127.0.0.1", int(port), listen_port=args.port).start()
    stop = threading.Event()

    def outage(*_):
        proxy.set_mode("reset")
        print(f"tcp proxy: reset mode, {proxy.cut()} connections cut", flush=True)

    def restore(*_):
        proxy.set_mode("forward")
        print("tcp proxy: forwarding", flush=True)

    signal.signal(signal.SIGUSR1, outage)
    signal.signal(signal.SIGUSR2, restore)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"tcp proxy listening on {proxy.address}, forwarding to {args.target}", flush=True)
    try:
        while not stop.wait(1):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        proxy.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
