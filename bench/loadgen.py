"""A small HTTP load generator, run as its own process so that it never shares a GIL with a server.

    python bench/loadgen.py --url http://127.0.0.1:8080 --method POST --path /trainings \\
        -H 'Authorization: Bearer mt_...' -H 'Content-Type: application/json' \\
        --body '{"uuid": "{uuid}"}' --connections 16 --duration 10 [--engine auto|python|wrk]
    python bench/loadgen.py --url ... --path '/trainings/{int:1:1000}' -c 1 -n 500

A request is made from a template: ``{uuid}`` in the path or the body becomes a fresh UUID4 for
each request, ``{int:A:B}`` a random integer from A to B. It prints one JSON object on stdout:
engine, connections, duration_s, requests (answered), rps, p50_ms, p99_ms, mean_ms, max_ms,
status (answers counted by HTTP status), errors (requests without an answer) and error_kinds.

Engines:

- ``python``: one thread per connection, each with a persistent ``http.client`` connection
  (reopened only when the server closes it or a request fails). Every request a thread started
  is finished and counted, also the last ones after the deadline. Latency is measured per
  request with ``time.perf_counter``.
- ``wrk``: when ``wrk`` is installed and the run is bounded by time (wrk has no request count),
  a Lua script makes each request from the same template and counts answers by status. wrk
  drops the requests in flight at the deadline; they are neither answered nor counted.
- ``auto`` (the default): ``wrk`` when installed and ``--duration`` is given, else ``python``.

Every run is bounded: at most ``MAX_DURATION`` seconds and ``MAX_REQUESTS`` requests, and each
request times out after ``--timeout`` seconds. Only 127.0.0.1 / localhost URLs are accepted.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from common import Connection, percentile

MAX_DURATION = 600.0
MAX_REQUESTS = 5_000_000
MAX_CONNECTIONS = 512
LOCAL_HOSTS = ("127.0.0.1", "localhost")
PLACEHOLDER = re.compile(r"\{(uuid|int:(-?[0-9]+):(-?[0-9]+))\}")


@dataclass(frozen=True)
class RequestFactory:
    """How to make each request: the method, a path and a body template, fixed headers."""

    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: str | None = None

    def make(self, rng: random.Random) -> tuple[str, bytes | None]:
        path = fill(self.path, rng)
        body = None if self.body is None else fill(self.body, rng).encode()
        return path, body


def fill(template: str, rng: random.Random) -> str:
    """The template with ``{uuid}`` and ``{int:A:B}`` replaced by fresh values."""

    def value(match: re.Match[str]) -> str:
        if match.group(1) == "uuid":
            return str(uuid.UUID(int=rng.getrandbits(128), version=4))
        return str(rng.randint(int(match.group(2)), int(match.group(3))))

    return PLACEHOLDER.sub(value, template)


# The Python engine -------------------------------------------------------------------------


class _Budget:
    """Hands out requests until the count or the deadline is reached (thread-safe)."""

    def __init__(self, requests: int | None, deadline: float) -> None:
        self.left = requests
        self.deadline = deadline
        self.lock = threading.Lock()

    def take(self) -> bool:
        if time.perf_counter() >= self.deadline:
            return False
        if self.left is None:
            return True
        with self.lock:
            if self.left <= 0:
                return False
            self.left -= 1
            return True


def run_python(
    port: int,
    factory: RequestFactory,
    connections: int,
    duration: float | None,
    requests: int | None,
    timeout: float,
) -> dict[str, Any]:
    limit = min(duration if duration is not None else MAX_DURATION, MAX_DURATION)
    start_barrier = threading.Barrier(connections + 1)
    results: list[tuple[list[float], Counter[int], Counter[str]]] = []
    results_lock = threading.Lock()
    budget: list[_Budget] = []

    def worker(index: int) -> None:
        rng = random.Random((os.getpid() << 16) ^ (index * 7919) ^ time.time_ns())
        latencies: list[float] = []
        statuses: Counter[int] = Counter()
        errors: Counter[str] = Counter()
        connection = Connection(port, timeout)
        start_barrier.wait()
        try:
            while budget[0].take():
                path, body = factory.make(rng)
                began = time.perf_counter()
                try:
                    status, _ = connection.send(factory.method, path, body, factory.headers)
                except (OSError, http.client.HTTPException) as exc:
                    errors[type(exc).__name__] += 1
                    continue
                latencies.append(time.perf_counter() - began)
                statuses[status] += 1
        finally:
            connection.close()
            with results_lock:
                results.append((latencies, statuses, errors))

    threads = [
        threading.Thread(target=worker, args=(i,), name=f"conn-{i}", daemon=True)
        for i in range(connections)
    ]
    for thread in threads:
        thread.start()
    started = time.perf_counter()
    budget.append(
        _Budget(min(requests, MAX_REQUESTS) if requests is not None else None, started + limit)
    )
    start_barrier.wait()
    for thread in threads:
        # Every request ends by its timeout, so a thread ends at most that long after the limit.
        thread.join(limit + timeout + 5)
    elapsed = time.perf_counter() - started
    latencies = sorted(x for lat, _, _ in results for x in lat)
    statuses: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    for _, st, er in results:
        statuses.update(st)
        errors.update(er)
    return _summary(
        "python",
        connections,
        elapsed,
        len(latencies),
        [x * 1000 for x in latencies],
        statuses,
        errors,
    )


def _summary(
    engine: str,
    connections: int,
    elapsed: float,
    answered: int,
    latencies_ms: list[float] | None,
    statuses: Counter[int],
    errors: Counter[str],
    *,
    p50: float | None = None,
    p99: float | None = None,
    mean: float | None = None,
    maximum: float | None = None,
) -> dict[str, Any]:
    if latencies_ms is not None:
        p50 = percentile(latencies_ms, 0.50)
        p99 = percentile(latencies_ms, 0.99)
        mean = sum(latencies_ms) / len(latencies_ms) if latencies_ms else float("nan")
        maximum = latencies_ms[-1] if latencies_ms else float("nan")
    return {
        "engine": engine,
        "connections": connections,
        "duration_s": round(elapsed, 4),
        "requests": answered,
        "rps": answered / elapsed if elapsed > 0 else 0.0,
        "p50_ms": p50,
        "p99_ms": p99,
        "mean_ms": mean,
        "max_ms": maximum,
        "status": {str(code): count for code, count in sorted(statuses.items())},
        "errors": sum(errors.values()),
        "error_kinds": dict(errors),
    }


# The wrk engine ----------------------------------------------------------------------------

WRK_SCRIPT = r"""
-- Generated by bench/loadgen.py: every request from the template, answers counted by status.
statuses = {}
local threads = {}
local counter = 0
local method = @@METHOD@@
local path_template = @@PATH@@
local body_template = @@BODY@@
local headers = @@HEADERS@@

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

function init(args)
  math.randomseed(@@SEED@@ + tid * 7919)
end

local function uuid4()
  counter = counter + 1
  -- Random bits, then this thread's number and a counter: unique within the run by construction.
  return string.format("%08x-%04x-4%03x-%04x-%02x%010x",
    math.random(0, 4294967295), math.random(0, 65535), math.random(0, 4095),
    math.random(0, 16383) + 32768, tid % 256, counter)
end

local function fill(template)
  if template == nil then return nil end
  local text = template:gsub("{uuid}", function() return uuid4() end)
  text = text:gsub("{int:(%-?%d+):(%-?%d+)}", function(a, b)
    return tostring(math.random(tonumber(a), tonumber(b)))
  end)
  return text
end

function request()
  return wrk.format(method, fill(path_template), headers, fill(body_template))
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local counts = {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      counts[status] = (counts[status] or 0) + count
    end
  end
  local parts = {}
  for status, count in pairs(counts) do
    table.insert(parts, string.format('"%d": %d', status, count))
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, ' ..
    '"mean_us": %f, "max_us": %d, "status": {%s}, "connect": %d, "read": %d, ' ..
    '"write": %d, "timeout": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.mean, latency.max, table.concat(parts, ", "), e.connect, e.read, e.write,
    e.timeout))
end
"""


def _lua_string(value: str | None) -> str:
    if value is None:
        return "nil"
    if not value.isascii():
        raise ValueError("the wrk engine takes ASCII templates only")
    return json.dumps(value)  # a JSON string of ASCII text is a valid Lua string literal


def run_wrk(
    url: str, factory: RequestFactory, connections: int, duration: float, timeout: float
) -> dict[str, Any]:
    pairs = (f"[{_lua_string(k)}] = {_lua_string(v)}" for k, v in factory.headers.items())
    headers = "{" + ", ".join(pairs) + "}"
    values = {
        "METHOD": _lua_string(factory.method),
        "PATH": _lua_string(factory.path),
        "BODY": _lua_string(factory.body),
        "HEADERS": headers,
        "SEED": str(random.SystemRandom().randrange(1, 2**30)),
    }
    script = re.sub(r"@@([A-Z]+)@@", lambda m: values[m.group(1)], WRK_SCRIPT)
    seconds = max(1, round(min(duration, MAX_DURATION)))
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as file:
        file.write(script)
        script_path = file.name
    try:
        completed = subprocess.run(
            [
                "wrk",
                "-t1",  # one event loop is plenty on 127.0.0.1 and leaves the CPU to the server
                f"-c{connections}",
                f"-d{seconds}s",
                f"--timeout={max(1, round(timeout))}s",
                "-s",
                script_path,
                url,
            ],
            capture_output=True,
            text=True,
            timeout=seconds + timeout + 30,
            check=False,
        )
    finally:
        os.unlink(script_path)
    line = next((x for x in completed.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed ({completed.returncode}): {completed.stderr.strip()}")
    data = json.loads(line.removeprefix("BENCH_JSON "))
    errors: Counter[str] = Counter(
        {kind: data[kind] for kind in ("connect", "read", "write", "timeout") if data[kind]}
    )
    statuses = Counter({int(k): v for k, v in data["status"].items()})
    return _summary(
        "wrk",
        connections,
        data["duration_us"] / 1e6,
        data["requests"],
        None,
        statuses,
        errors,
        p50=data["p50_us"] / 1000,
        p99=data["p99_us"] / 1000,
        mean=data["mean_us"] / 1000,
        maximum=data["max_us"] / 1000,
    )


# The command -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="http://127.0.0.1:PORT")
    parser.add_argument("--method", default="GET")
    parser.add_argument("--path", default="/")
    parser.add_argument("-H", "--header", action="append", default=[], help="'Name: value'")
    parser.add_argument("--body", default=None, help="body template ({uuid}, {int:A:B})")
    parser.add_argument("--connections", "-c", type=int, default=1)
    parser.add_argument("--duration", "-d", type=float, default=None, help="seconds")
    parser.add_argument("--requests", "-n", type=int, default=None, help="requests in all")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    parser.add_argument("--engine", choices=("auto", "python", "wrk"), default="auto")
    args = parser.parse_args(argv)

    parts = urlsplit(args.url)
    if parts.scheme != "http" or parts.hostname not in LOCAL_HOSTS or not parts.port:
        parser.error("--url must be http://127.0.0.1:PORT (load goes to this machine only)")
    if args.duration is None and args.requests is None:
        parser.error("give --duration or --requests")
    if not 1 <= args.connections <= MAX_CONNECTIONS:
        parser.error(f"--connections must be 1..{MAX_CONNECTIONS}")
    headers = {}
    for header in args.header:
        name, _, value = header.partition(":")
        headers[name.strip()] = value.strip()
    factory = RequestFactory(args.method.upper(), args.path, headers, args.body)

    engine = args.engine
    if engine == "auto":
        use_wrk = shutil.which("wrk") and args.requests is None
        engine = "wrk" if use_wrk else "python"
    if engine == "wrk":
        if args.duration is None or args.requests is not None:
            parser.error("the wrk engine runs for a --duration, without --requests")
        if shutil.which("wrk") is None:
            parser.error("wrk is not installed")
        summary = run_wrk(args.url, factory, args.connections, args.duration, args.timeout)
    else:
        summary = run_python(
            parts.port,
            factory,
            args.connections,
            args.duration,
            args.requests,
            args.timeout,
        )
    json.dump(summary, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
