"""Count database round trips at the wire: a TCP proxy that counts the client's flights.

A flight is what a client sends once the server has answered it (or first, on a new connection): one
round trip, however many protocol messages it carries (a pipelined Parse/Bind/Execute/Sync is one,
so is one simple query). Counting at the wire sees everything that costs a round trip: BEGIN, COMMIT,
the pool's pre-ping, savepoints, sequences, a driver's own queries; hooks in SQLAlchemy see statements,
not round trips, and miss several of those.

From Python, e.g. a pytest test (the proxy runs on a background thread of the test's own process):

    from scripts.roundtrips import RoundTripProxy

    def test_an_event_costs_few_round_trips(database_url):
        with RoundTripProxy.for_url(database_url, postgres=True) as proxy:
            engine = make_engine(proxy.url)        # the same URL, pointed at the proxy (sslmode=disable)
            warm_up(engine)                        # connect, first statements: not what is measured
            before = proxy.flights()
            do_the_work(engine)
            assert proxy.flights() - before <= 6, proxy.describe(proxy.recent(proxy.flights() - before))

`flights()` is exact once the client has its answer: a flight is counted when its first bytes reach
the proxy, before the server sees them. With `postgres=True` each flight also records the statements
it carries (simple queries, and Parse messages, also those executed later by a prepared statement's
name), readable with `recent(n)`; `describe(...)` makes one line per flight for a failure message.

From the command line, in front of PostgreSQL:

    .venv/bin/python -m scripts.roundtrips --target 127.0.0.1:5432 --port 15432 [--show]

prints the totals every few seconds and on Ctrl-C (with --show, the flights since the last total); point
the client at 127.0.0.1:15432 (with sslmode=disable, so the statements can be read).

Built on scripts/tcp_proxy.py's TcpProxy (its loop, start/stop, modes), through its two hooks for forwarded
connections: only forwarding is counted.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import cast

from sqlalchemy.engine import make_url

from scripts.tcp_proxy import TcpProxy

SSL_REQUEST, GSSENC_REQUEST, CANCEL_REQUEST = 80877103, 80877104, 80877102
STATEMENT_CHARS = 120


@dataclass
class Flight:
    number: int
    connection: int
    statements: list[str] = field(default_factory=list)
    # The PostgreSQL message types it carried, e.g. "PBDES" (Parse, Bind, Describe, Execute, Sync); "0" is an
    # untyped start-up packet (SSLRequest, StartupMessage).
    messages: str = ""


class _PostgresDecoder:
    """Splits the client's byte stream into frontend messages; names the statements each flight runs.

    Gives up (and only counts) on anything it cannot read, e.g. a TLS stream after SSLRequest."""

    def __init__(self):
        self.buffer = b""
        self.startup = True
        self.broken = False
        self.prepared: dict[str, str] = {}  # named prepared statements: name -> text
        self.parsed_now: tuple[int, str] | None = None  # (flight, name) of the last Parse of a named statement

    def feed(self, data: bytes, flight: Flight) -> None:
        if self.broken:
            return
        self.buffer += data
        try:
            while self._next(flight):
                pass
        except (struct.error, UnicodeDecodeError, ValueError):
            self.broken, self.buffer = True, b""

    def _next(self, flight: Flight) -> bool:
        if self.startup:
            if len(self.buffer) < 8:
                return False
            length, code = struct.unpack("!ii", self.buffer[:8])
            if length < 8 or length > 10_000:
                raise ValueError("not a startup packet")
            if len(self.buffer) < length:
                return False
            self.buffer = self.buffer[length:]
            if code not in (SSL_REQUEST, GSSENC_REQUEST, CANCEL_REQUEST):
                self.startup = False  # the StartupMessage: typed messages from here on
            flight.messages += "0"
            return True
        if len(self.buffer) < 5:
            return False
        kind, length = chr(self.buffer[0]), struct.unpack("!i", self.buffer[1:5])[0]
        if len(self.buffer) < 1 + length:
            return False
        payload, self.buffer = self.buffer[5 : 1 + length], self.buffer[1 + length :]
        flight.messages += kind
        self._statement(kind, payload, flight)
        return True

    def _statement(self, kind: str, payload: bytes, flight: Flight) -> None:
        """Each statement once: from its Parse, or from the Bind that runs a statement prepared earlier."""
        if kind == "Q":
            flight.statements.append(_short(payload.split(b"\0", 1)[0]))
        elif kind == "P":
            name, query = (part.decode("utf-8", "replace") for part in payload.split(b"\0", 2)[:2])
            flight.statements.append(_short(query.encode()))
            if name:
                self.prepared[name] = flight.statements[-1]
                self.parsed_now = (flight.number, name)
        elif kind == "B":
            name = payload.split(b"\0", 2)[1].decode("utf-8", "replace")
            if name in self.prepared and self.parsed_now != (flight.number, name):
                flight.statements.append(self.prepared[name])


def _short(query: bytes) -> str:
    """The statement on one line (whole: `gist` needs its FROM)."""
    return " ".join(query.decode("utf-8", "replace").split())


_GISTS = (
    (re.compile(r"pg_advisory\w*lock", re.I), "{0}"),
    (re.compile(r"^INSERT\s+INTO\s+(\w+)", re.I), "INSERT {1}"),
    (re.compile(r"^UPDATE\s+(\w+)", re.I), "UPDATE {1}"),
    (re.compile(r"^DELETE\s+FROM\s+(\w+)", re.I), "DELETE {1}"),
    (re.compile(r"^SELECT\b.*?\bFROM\s+(\w+)", re.I | re.S), "SELECT {1}"),
)


def gist(statement: str) -> str:
    """A statement's kind and table: `INSERT events`, `SELECT users`, `pg_advisory_xact_lock`, `BEGIN`."""
    if statement.strip() in ("", ";"):
        return "(empty query)"
    for pattern, name in _GISTS:
        if match := pattern.search(statement):
            return name.format(match.group(0), *match.groups())
    return statement[:40]


def _clip(text: str) -> str:
    return text if len(text) <= STATEMENT_CHARS else text[: STATEMENT_CHARS - 3] + "..."


class _Conversation:
    """One proxied connection: the flight the client is sending, if it has the turn, and (PostgreSQL) its
    message decoder."""

    def __init__(self, number: int, postgres: bool):
        self.number = number
        self.flight: Flight | None = None  # the one the client is sending; None once the server answers
        self.decoder = _PostgresDecoder() if postgres else None


class RoundTripProxy(TcpProxy):
    """A TcpProxy that counts client flights (round trips) over all its connections."""

    def __init__(self, target_host: str, target_port: int, listen_port: int = 0, postgres: bool = False, keep=10_000):
        """`postgres`: decode PostgreSQL's frontend messages to name each flight's statements; `keep`: how
        many recent flights `recent()` can return."""
        super().__init__(target_host, target_port, listen_port=listen_port)
        self.postgres = postgres
        self._flights = 0
        self._opened = 0
        self._recent: deque[Flight] = deque(maxlen=keep)
        self._target_url: str | None = None

    @classmethod
    def for_url(cls, url: str, **options) -> RoundTripProxy:
        """A proxy to the host and port of a database URL; `.url` (once started) is the URL through it."""
        parsed = make_url(url)
        proxy = cls(parsed.host or "127.0.0.1", parsed.port or 5432, **options)
        proxy._target_url = url
        return proxy

    @property
    def url(self) -> str:
        """The target URL with the proxy's host and port; sslmode=disable, so the statements are readable
        (on loopback, TLS would only add the handshake's round trips to each new connection)."""
        if self._target_url is None or self.port is None:
            raise RuntimeError("start a proxy made with for_url() first")
        parsed = make_url(self._target_url).set(host="127.0.0.1", port=self.port)
        parsed = parsed.update_query_dict({"sslmode": "disable"})
        return parsed.render_as_string(hide_password=False)

    # --- reading, from any thread ---

    def flights(self) -> int:
        """Client flights so far, on every connection (read on the proxy's loop: nothing half-counted)."""
        return self._call(lambda: self._flights)

    def connections(self) -> int:
        return self._call(lambda: self._opened)

    def recent(self, count: int | None = None) -> list[Flight]:
        """The last `count` flights (all kept ones by default), oldest first."""
        flights = self._call(lambda: list(self._recent))
        if count is None:
            return flights
        return flights[max(0, len(flights) - count) :] if count > 0 else []

    @staticmethod
    def describe(flights: list[Flight]) -> str:
        lines = (
            f"flight {f.number} (connection {f.connection}): {'; '.join(map(_clip, f.statements)) or 'messages ' + f.messages}"
            for f in flights
        )
        return "\n".join(lines)

    def stop(self) -> None:
        """Close every connection and let their tasks end before the loop stops (no "Task was destroyed")."""
        if self._loop is not None and self._loop.is_running():
            asyncio.run_coroutine_threadsafe(self._close_all(), self._loop).result(timeout=10)
        super().stop()

    async def _close_all(self) -> None:
        await self._shutdown()  # aborts every transport: each connection's task then sees its end and returns
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        if tasks:
            await asyncio.wait(tasks, timeout=5)

    # --- on the proxy's loop: TcpProxy's hooks ---

    def _opened_connection(self) -> _Conversation:
        self._opened += 1
        return _Conversation(self._opened, self.postgres)

    def _forwarding(self, data: bytes, connection: object, from_client: bool) -> None:
        conversation = cast(_Conversation, connection)  # what _opened_connection made for this connection
        if not from_client:
            conversation.flight = None
            return
        if conversation.flight is None:  # the server answered since the client last sent: a new flight
            self._flights += 1
            conversation.flight = Flight(self._flights, conversation.number)
            self._recent.append(conversation.flight)
        if conversation.decoder is not None:
            conversation.decoder.feed(data, conversation.flight)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="host:port to forward to, e.g. 127.0.0.1:5432")
    parser.add_argument("--port", type=int, default=0, help="port to listen on, 127.0.0.1 (0: a free one)")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between totals")
    parser.add_argument("--show", action="store_true", help="print each flight's statements (PostgreSQL)")
    parser.add_argument("--raw", action="store_true", help="count only; do not decode PostgreSQL messages")
    args = parser.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    proxy = RoundTripProxy(host or "127.0.0.1", int(port), listen_port=args.port, postgres=not args.raw)
    proxy.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"round-trip proxy on 127.0.0.1:{proxy.port}, forwarding to {args.target}", flush=True)
    shown = 0
    try:
        while not stop.wait(args.every):
            shown = _report(proxy, args.show, shown)
    except KeyboardInterrupt:
        pass
    finally:
        _report(proxy, args.show, shown)
        proxy.stop()
    return 0


def _report(proxy: RoundTripProxy, show: bool, shown: int) -> int:
    flights = proxy.flights()
    if show and flights > shown:
        print(proxy.describe(proxy.recent(flights - shown)), flush=True)
    print(f"{time.strftime('%H:%M:%S')} {flights} flights on {proxy.connections()} connections", flush=True)
    return flights


if __name__ == "__main__":
    raise SystemExit(main())
