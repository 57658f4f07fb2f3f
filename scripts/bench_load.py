"""Load generators for scripts/bench.py: wrk for saturation (closed loop), a paced sender for latency (open loop).

`run_wrk` drives wrk with a Lua script that builds each request from a `SignedEvents` data file (the
fixture's bytes with each request's event id, inquiry id, ... filled in, and its precomputed signature),
so every request is a distinct, validly signed event without holding thousands of 65 KB bodies in
memory. It counts answers by their body: the expected status (`"queued"`, or the ceiling's
`"received"`), `"duplicate"`, anything else, non-200. Without `wrap`, a wrk thread stops when its
share of events is used up instead of repeating one (a repeat is a cheap `duplicate`); wrk itself runs
on to the end of its duration, so such a run does not count (`problem()`): give it enough events.

`paced_post` sends at a fixed rate whatever the server does (open loop: wrk waits for each answer
before sending the next on a connection, which hides queueing). Request i is due at start + i / rate;
a pool of threads, each with one keep-alive connection, picks the next due request, sleeps until its
time, sends it, and measures from the scheduled time, so time spent waiting for a free connection
counts as latency, as it would for Persona.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import shutil
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from scripts.bench_events import SignedEvents
from scripts.bench_stack import Children

WEBHOOK = "/webhooks/persona"

WRK_LUA = r"""
-- scripts/bench_load.py: requests from a SignedEvents data file; answers counted by status and body.
parts, rows = {}, {}
index, exhausted = 0, false
n_expected, n_duplicate, n_other, n_non200 = 0, 0, 0, 0
first_error = ""
local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  expect, wrap, nthreads = args[2], args[3] == "wrap", tonumber(args[4])
  local f = assert(io.open(args[1], "rb"))
  local nparts = tonumber(f:read("*l"):match("^(%d+)"))
  for k = 1, nparts do
    local size = tonumber(f:read("*l"))
    parts[k] = size > 0 and f:read(size) or ""
  end
  local r = 0
  for line in f:lines() do
    if r % nthreads == tid then
      local row = {}
      for value in string.gmatch(line, "[^\t]+") do row[#row + 1] = value end
      rows[#rows + 1] = row
    end
    r = r + 1
  end
  f:close()
end

function request()
  index = index + 1
  if index > #rows then
    if wrap then
      index = 1
    else
      exhausted = true
      wrk.thread:stop()
      return wrk.format("GET", "/healthz")
    end
  end
  local row, out = rows[index], {parts[1]}
  for k = 2, #parts do
    out[#out + 1] = row[k]
    out[#out + 1] = parts[k]
  end
  local headers = {["Content-Type"] = "application/json", ["Persona-Signature"] = row[1]}
  return wrk.format("POST", nil, headers, table.concat(out))
end

function response(status, headers, body)
  if exhausted then return end
  if status ~= 200 then
    n_non200 = n_non200 + 1
  elseif string.find(body, expect, 1, true) then
    n_expected = n_expected + 1
    return
  elseif string.find(body, '"duplicate"', 1, true) then
    n_duplicate = n_duplicate + 1
  else
    n_other = n_other + 1
  end
  if first_error == "" then first_error = status .. " " .. string.sub(body or "", 1, 300) end
end

function done(summary, latency, requests)
  local t = {expected = 0, duplicate = 0, other = 0, non200 = 0, exhausted = 0}
  local err = ""
  for _, thread in ipairs(threads) do
    t.expected = t.expected + thread:get("n_expected")
    t.duplicate = t.duplicate + thread:get("n_duplicate")
    t.other = t.other + thread:get("n_other")
    t.non200 = t.non200 + thread:get("n_non200")
    if thread:get("exhausted") then t.exhausted = t.exhausted + 1 end
    if err == "" then err = thread:get("first_error") end
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_WRK {"expected": %d, "duplicate": %d, "other": %d, "non200": %d, "exhausted_threads": %d, ' ..
    '"duration_us": %d, "responses": %d, "connect_errors": %d, "read_errors": %d, "write_errors": %d, ' ..
    '"timeouts": %d, "p50_us": %d, "p99_us": %d}\n',
    t.expected, t.duplicate, t.other, t.non200, t.exhausted, summary.duration, summary.requests,
    e.connect, e.read, e.write, e.timeout, latency:percentile(50), latency:percentile(99)))
  if err ~= "" then io.write("BENCH_WRK_ERROR " .. string.gsub(err, "\n", " ") .. "\n") end
end
"""


BAD_ANSWERS = ("duplicate", "other", "non200", "connect_errors", "read_errors", "write_errors", "timeouts")


@dataclass
class WrkResult:
    expected: int
    duration: float
    counts: dict
    cpu_seconds: float  # wrk's own user + system CPU
    first_error: str = ""

    @property
    def rate(self) -> float:
        return self.expected / self.duration if self.duration else 0.0

    @property
    def errors(self) -> int:
        return sum(self.counts[kind] for kind in BAD_ANSWERS)

    def problem(self) -> str | None:
        """Why the run does not count, or None."""
        if self.errors:
            counts = ", ".join(f"{self.counts[kind]} {kind}" for kind in BAD_ANSWERS if self.counts[kind])
            first = self.first_error[:200]
            return f"{self.errors} bad answers of {self.counts['responses']} ({counts}); first: {first}"
        if self.expected == 0:
            return "no answers"
        if self.counts["exhausted_threads"]:
            return f"ran out of distinct events after {self.expected} (the rate would read low)"
        return None


def wrk_binary() -> str:
    binary = shutil.which("wrk")
    if binary is None:
        raise SystemExit(
            "bench: wrk is not installed; the webhook row needs it as its load generator.\n"
            "       Install it with:  sudo apt-get install -y wrk   (or: brew install wrk)"
        )
    return binary


class Wrk:
    """Runs wrk (as a registered child, so it is stopped on Ctrl-C) and parses the Lua script's summary."""

    def __init__(self, children: Children, directory: Path, threads: int = 1, connections: int = 32):
        self.binary = wrk_binary()
        self.children, self.directory = children, directory
        self.threads, self.connections = threads, connections
        self.script = directory / "bench_wrk.lua"
        self.script.write_text(WRK_LUA)
        self._runs = 0

    def run(self, url: str, data: Path, seconds: float, expect: str, wrap: bool) -> WrkResult:
        self._runs += 1
        name = f"wrk-{self._runs}"
        command = [
            self.binary, f"-t{self.threads}", f"-c{self.connections}", f"-d{max(1, round(seconds))}s",
            "--timeout", "10s", "-s", str(self.script), f"{url}{WEBHOOK}",
            "--", str(data), f'"{expect}"', "wrap" if wrap else "once", str(self.threads),
        ]  # fmt: skip
        process = self.children.start(name, command, dict(os.environ))
        _pid, status, usage = os.wait4(process.pid, 0)  # wait4, for wrk's own CPU time
        process.returncode = os.waitstatus_to_exitcode(status)
        return self._parse((self.directory / f"{name}.log").read_text(), usage.ru_utime + usage.ru_stime)

    @staticmethod
    def _parse(output: str, cpu: float) -> WrkResult:
        lines = output.splitlines()
        summary = next((line for line in lines if line.startswith("BENCH_WRK ")), None)
        if summary is None:
            raise RuntimeError(f"wrk printed no summary:\n{output[-2000:]}")
        counts = json.loads(summary.removeprefix("BENCH_WRK "))
        error = next(
            (line.removeprefix("BENCH_WRK_ERROR ") for line in lines if line.startswith("BENCH_WRK_ERROR ")), ""
        )
        return WrkResult(counts["expected"], counts["duration_us"] / 1e6, counts, cpu, error)


@dataclass
class PacedResult:
    rate: float
    wall_start: float  # time.time() at which request 0 was due
    latencies: list[float | None]  # seconds from the scheduled time to the whole answer; None: no answer
    statuses: Counter = field(default_factory=Counter)
    lags: list[float] = field(default_factory=list)  # seconds each send started after its scheduled time
    first_error: str = ""

    def scheduled(self, index: int) -> float:
        return self.wall_start + index / self.rate

    def answered(self) -> list[float]:
        return [latency for latency in self.latencies if latency is not None]

    def problem(self, expect: str) -> str | None:
        bad = sum(count for status, count in self.statuses.items() if status != expect)
        if bad:
            return f"{bad} bad answers ({dict(self.statuses)}); first: {self.first_error}"
        return None


def _classify(status: int, body: bytes, expect: str) -> str:
    if status != 200:
        return f"http {status}"
    if f'"{expect}"'.encode() in body:
        return expect
    return "duplicate" if b'"duplicate"' in body else "other"


def _post(connection: http.client.HTTPConnection, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    """One POST on a kept-alive connection. A connection the server closed while idle (gunicorn's keep-alive
    is 5 s) fails at once, before anything is processed: then once more on a new connection."""
    for attempt in (1, 2):
        try:
            connection.request("POST", WEBHOOK, body, headers)
            response = connection.getresponse()
            return response.status, response.read()
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
            connection.close()  # http.client reconnects on the next request
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def paced_post(
    port: int, events: SignedEvents, rate: float, count: int, expect: str = "queued", connections: int = 32,
    start_at: float | None = None,
) -> PacedResult:  # fmt: skip
    """POST events[0:count] at `rate` per second from `start_at` (time.time(); default: in 0.3 s), open
    loop; returns when all are answered. Request i is due at start_at + i / rate."""
    start_at = time.time() + 0.3 if start_at is None else start_at
    start = time.perf_counter() + (start_at - time.time())  # the same instant on the monotonic clock
    result = PacedResult(rate, start_at, [None] * count)
    counter, lock = itertools.count(), threading.Lock()

    def sender() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while (i := next(counter)) < count:
            body, headers = events.request(i)
            due = start + i / rate
            if (wait := due - time.perf_counter()) > 0:
                time.sleep(wait)
            sent = time.perf_counter()
            try:
                status, answer = _post(connection, body, headers)
                outcome = _classify(status, answer, expect)
                result.latencies[i] = time.perf_counter() - due
            except (OSError, http.client.HTTPException) as error:
                outcome, answer = f"error {type(error).__name__}", str(error).encode()
            with lock:
                result.statuses[outcome] += 1
                result.lags.append(sent - due)
                if outcome != expect and not result.first_error:
                    result.first_error = f"{outcome}: {answer[:300]!r}"
        connection.close()

    threads = [threading.Thread(target=sender, daemon=True) for _ in range(min(connections, count))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return result
