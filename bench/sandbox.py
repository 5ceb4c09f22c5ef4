"""Sandbox apiserver benchmark: PATCHes per second and watch fan-out.

What it answers, against the sandbox's goals (docs/performance.md keeps the figures):

- **patch**: how many small PATCHes a second one sandbox process serves, and
  how much *server* CPU each costs, with K requests in flight. Bodies: a Lease
  renewal (``lease``, merge patch, ~110 bytes) or a kubelet's pod status
  update (``pod-status``, strategic merge patch on ``pods/status``). Every
  PATCH changes the object (a new renewTime / a flipped condition), so none
  is skipped as a no-op.
- **watch**: W watchers (raw streaming reads, counting events by counting
  ``b"\\n"``) on the Leases of one namespace while a writer *inside the server
  process* patches them at a target rate (or as fast as it can, ``rate 0``):
  events/s delivered per watcher, whether each kept up (saw every event, not
  closed as too slow, caught up within :data:`KEPT_UP_S` of the writer's end),
  and server CPU per event. The writer runs in the server because 10 watchers
  x 10,000 events/s needs 10,000 writes/s, more than HTTP PATCHes could feed
  on the same core; it uses the real write path (``Api.patch``), without HTTP.
- **floor**: the same PATCH load against an empty ASGI app under the same
  hypercorn config: what hypercorn alone costs per request.

How, so that the figures mean what they say:

- the server runs in its own process (``python -m bench.sandbox serve``) and
  its CPU (utime + stime from ``/proc/<pid>/stat``) is read just before and
  just after each timed repeat: *server CPU per request* is that delta over
  the count. Load clients run in other processes with the project's lean
  client (:class:`fleet.kube._transport.HotTransport`), so their CPU is
  never counted against the server;
- each case (app x scheme x body x K) gets a fresh server and a fresh client
  process; a warm-up precedes the timed repeats; the client waits for a
  ``go`` line before each repeat so the CPU readings bracket exactly it;
- reported: the minimum server CPU per request and the best rate over the
  repeats (the least disturbed), server peak RSS (``VmHWM``), client CPU.

Entry points: :func:`run` (``kubemock-fleet bench sandbox``) and :func:`format_report`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import msgspec
import trio
import trio.lowlevel

from fleet.machinery import JSON, MERGE_PATCH, STRATEGIC_MERGE_PATCH

__all__ = [
    "BODIES",
    "KEPT_UP_S",
    "PatchCase",
    "SandboxBenchResult",
    "WatchCase",
    "format_report",
    "run",
]

Scheme = Literal["http", "https"]
Server = Literal["lean", "hypercorn"]
SERVERS: tuple[Server, ...] = ("lean", "hypercorn")
"""The sandbox's own HTTP/1.1 server (the default), or hypercorn for everything (as before the lean server)."""
Body = Literal["lease", "pod-status"]
BODIES: tuple[Body, ...] = ("lease", "pod-status")
NAMESPACE = "bench"
KEPT_UP_S = 0.25
"""A watcher kept up if it saw the writer's last event within this long of the writer's end."""
_TICKS = os.sysconf("SC_CLK_TCK")
LEASES = "/apis/coordination.k8s.io/v1/namespaces/bench/leases"
PODS = "/api/v1/namespaces/bench/pods"


# --- results ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PatchCase:
    """One (app, scheme, body, in-flight) case."""

    app: str
    """``sandbox``, or ``empty`` (an empty ASGI app under the same HTTP server: the floor)."""
    server: str
    """The HTTP server in front of the app: ``lean`` (``fleet.sandbox._http1``) or ``hypercorn``."""
    scheme: str
    body: str
    inflight: int
    requests: int
    """PATCHes per timed repeat."""
    patches_per_s: float
    """Best over the repeats: requests / wall time of the repeat."""
    server_cpu_us_per_patch: float
    """Server process CPU (user + system) per PATCH, minimum over the repeats."""
    server_cpu_share: float
    """Server CPU seconds / wall seconds in the best repeat (1.0 = one core saturated)."""
    client_cpu_us_per_patch: float
    server_peak_rss_mib: float


@dataclass(frozen=True, slots=True)
class WatchCase:
    """W watchers while the in-server writer makes ``events`` changes at ``target_rate``."""

    server: str
    scheme: str
    watchers: int
    events: int
    target_rate: int
    """Writes per second asked of the in-server writer (0: as fast as it can)."""
    write_rate: float
    """Writes per second the writer achieved (best repeat)."""
    events_per_s_per_watcher: float
    """Slowest watcher, best repeat: events received / (last event time - writer start)."""
    kept_up: bool
    """In the best repeat every watcher saw every event, none was closed, all caught up in time."""
    max_catch_up_ms: float
    """Best repeat: how long after the writer's last write the slowest watcher saw it."""
    server_cpu_us_per_event: float
    """Server CPU per change (write + fan-out to every watcher), minimum over the repeats."""
    server_cpu_share: float
    client_cpu_s: float
    server_peak_rss_mib: float


@dataclass(frozen=True, slots=True)
class SandboxBenchResult:
    machine: str
    python: str
    command: str
    load: str
    """Load average when the run started (other engineers share the box)."""
    patch: list[PatchCase] = field(default_factory=list)
    watch: list[WatchCase] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


# --- /proc readings ------------------------------------------------------------------------
def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return 0.0


# --- server process ------------------------------------------------------------------------
async def _empty_app(
    scope: MutableMapping[str, Any],
    receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
    send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
) -> None:
    """The floor: read the request, answer a tiny JSON body."""
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    more = True
    while more:
        msg = await receive()
        more = msg.get("more_body", False) and msg["type"] != "http.disconnect"
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"2")],
        }
    )
    await send({"type": "http.response.body", "body": b"{}"})


async def _serve_empty(
    scheme: Scheme, front: str, workdir: Path, nursery: trio.Nursery
) -> tuple[str, Path]:
    from functools import partial

    from hypercorn.config import Config
    from hypercorn.trio import serve

    from fleet.kube import write_kubeconfig
    from fleet.sandbox import tls_files

    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = logging.getLogger("bench.sandbox.http")
    config.keep_alive_timeout = 75
    ca = None
    if scheme == "https":
        cert, key, ca = tls_files(workdir, "127.0.0.1")
        config.certfile, config.keyfile = str(cert), str(key)
    if front == "lean":
        from fleet.sandbox import Http1Server, open_listeners, url_of

        listeners = await open_listeners("127.0.0.1", 0)
        tls = config.create_ssl_context() if scheme == "https" else None
        await nursery.start(Http1Server(_empty_app, config, tls=tls).serve, listeners)
        url = url_of(listeners[0], scheme)
    else:
        url = (await nursery.start(partial(serve, _empty_app, config)))[0]  # type: ignore[arg-type]  # hypercorn types an ASGI app by its TypedDict scopes, which no MutableMapping-typed app matches
    kubeconfig = workdir / "kubeconfig"
    write_kubeconfig(kubeconfig, server=url, token="bench", ca_data=ca)
    return url, kubeconfig


_WRITES = [1]
"""Writes made so far by the in-server writer: each write gets a renewTime never used before."""


async def _in_server_writer(app: Any, count: int, rate: int, names: list[str]) -> dict[str, Any]:
    """Patch the bench Leases ``count`` times through ``Api.patch`` (no HTTP), paced at ``rate``/s."""
    from fleet.sandbox import Call

    rt = app.registry.get("coordination.k8s.io", "v1", "leases")
    base = _WRITES[0]
    _WRITES[0] += count
    start = time.monotonic()
    for i in range(count):
        if rate:
            ahead = start + i / rate - time.monotonic()
            if ahead > 0.001:
                await trio.sleep(ahead)
            elif i % 64 == 0:
                await trio.lowlevel.checkpoint()
        elif i % 64 == 0:
            await trio.lowlevel.checkpoint()  # let the watchers drain their queues
        name = names[i % len(names)]
        body = b'{"spec":{"renewTime":"%s"}}' % _micro(base + i).encode()
        app.api.patch(
            Call(rt=rt, namespace=NAMESPACE, name=name, body=body, content_type=MERGE_PATCH)
        )
    end = time.monotonic()
    await trio.lowlevel.checkpoint()
    return {"start": start, "end": end, "rv": app.store.rv}


async def _serve_main(app_kind: str, scheme: Scheme, front: str) -> None:
    from fleet.sandbox import RunningSandbox, SandboxSettings, serve_sandbox

    workdir = Path(tempfile.mkdtemp(prefix="kubemock-bench-sandbox-"))
    async with trio.open_nursery() as nursery:
        running: RunningSandbox | None = None
        if app_kind == "empty":
            url, kubeconfig = await _serve_empty(scheme, front, workdir, nursery)
        else:
            settings = SandboxSettings(
                port=0,
                tls=scheme == "https",
                kubeconfig_out=workdir / "kubeconfig",
                lean_http1=front == "lean",
            )
            running = await nursery.start(serve_sandbox, settings)
            url, kubeconfig = running.url, running.kubeconfig
        print(json.dumps({"url": url, "kubeconfig": str(kubeconfig)}), flush=True)
        # Commands on stdin, one per line: "write COUNT RATE NAME..." -> a JSON line; EOF stops.
        stdin = trio.lowlevel.FdStream(os.dup(0))
        buf = b""
        while True:
            data = await stdin.receive_some(65536)
            if not data:
                break
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                words = line.decode().split()
                if words and words[0] == "write" and running is not None:
                    done = await _in_server_writer(
                        running.app, int(words[1]), int(words[2]), words[3:]
                    )
                    print(json.dumps(done), flush=True)
        nursery.cancel_scope.cancel()


# --- load clients ----------------------------------------------------------------------------
def _micro(i: int) -> str:
    """A distinct MicroTime per counter value (one microsecond apart)."""
    s, us = divmod(i, 1_000_000)
    m, s = divmod(s, 60)
    h, m = divmod(m, 60)
    return f"2024-01-01T{h % 24:02d}:{m:02d}:{s:02d}.{us:06d}Z"


async def _setup(hot: Any, count: int, kind: str) -> list[str]:
    """Create the namespace and ``count`` Leases or Pods; their names."""
    ns = json.dumps(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
    ).encode()
    r = await hot.request("POST", "/api/v1/namespaces", body=ns, content_type=JSON)
    if r.status not in (200, 201, 409):
        raise RuntimeError(f"create namespace: HTTP {r.status} {r.content[:200]!r}")
    names = []
    for i in range(count):
        name = f"node-{i:05d}"
        if kind == "pod-status":
            obj = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": NAMESPACE},
                "spec": {"nodeName": "node-00000", "containers": [{"name": "c", "image": "pause"}]},
            }
            path = PODS
        else:
            obj = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": name, "namespace": NAMESPACE},
                "spec": {
                    "holderIdentity": name,
                    "leaseDurationSeconds": 40,
                    "renewTime": _micro(0),
                },
            }
            path = LEASES
        r = await hot.request("POST", path, body=json.dumps(obj).encode(), content_type=JSON)
        if r.status not in (200, 201, 409):
            raise RuntimeError(f"create {name}: HTTP {r.status} {r.content[:200]!r}")
        names.append(name)
    return names


def _patch_request(kind: str, name: str, i: int) -> tuple[str, bytes, str]:
    if kind == "pod-status":
        status = "True" if i % 2 else "False"
        body = (
            b'{"status":{"$setElementOrder/conditions":[{"type":"Ready"}],'
            b'"conditions":[{"type":"Ready","status":"%s","lastTransitionTime":"%s"}]}}'
            % (status.encode(), _micro(i)[:19].encode() + b"Z")
        )
        return f"{PODS}/{name}/status", body, STRATEGIC_MERGE_PATCH
    body = b'{"spec":{"holderIdentity":"%s","renewTime":"%s"}}' % (
        name.encode(),
        _micro(i).encode(),
    )
    return f"{LEASES}/{name}", body, MERGE_PATCH


class _Meta(msgspec.Struct):
    resourceVersion: str = "0"


class _Obj(msgspec.Struct):
    metadata: _Meta = msgspec.field(default_factory=_Meta)


class _Ev(msgspec.Struct):
    """A watch event, only as far as the watch client reads it."""

    type: str
    object: _Obj


class _Lines:
    """Commands from the orchestrator on stdin, read without blocking trio."""

    def __init__(self) -> None:
        self._stream = trio.lowlevel.FdStream(os.dup(0))
        self._buf = b""

    async def next(self) -> str:
        while b"\n" not in self._buf:
            data = await self._stream.receive_some(4096)
            if not data:
                raise EOFError
            self._buf += data
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode().strip()


async def _patch_client(
    kubeconfig: str, kind: str, inflight: int, requests: int, repeats: int
) -> None:
    from fleet.kube import HotTransport, HotTransportSettings, load_config

    config = load_config(kubeconfig)
    async with HotTransport(config, HotTransportSettings(connections=inflight)) as hot:
        names = await _setup(hot, inflight, "pod-status" if kind == "pod-status" else "lease")
        counter = [1]

        async def drive(count: int) -> None:
            per_task, extra = divmod(count, inflight)

            async def worker(name: str, n: int) -> None:
                for _ in range(n):
                    i = counter[0]
                    counter[0] += 1
                    path, body, ctype = _patch_request(kind, name, i)
                    r = await hot.request("PATCH", path, body=body, content_type=ctype)
                    if r.status != 200:
                        raise RuntimeError(f"PATCH {path}: HTTP {r.status} {r.content[:300]!r}")

            async with trio.open_nursery() as nursery:
                for t in range(inflight):
                    nursery.start_soon(worker, names[t], per_task + (1 if t < extra else 0))

        await drive(max(inflight, requests // 5))  # warm-up
        lines = _Lines()
        print("ready", flush=True)
        for _ in range(repeats):
            await lines.next()  # "go": the orchestrator has read the server's CPU
            cpu0, wall0 = time.process_time(), time.perf_counter()
            await drive(requests)
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            print(json.dumps({"wall": wall, "cpu": cpu}), flush=True)


async def _watch_client(kubeconfig: str, watchers: int, objects: int) -> None:
    from fleet.kube import HotTransport, load_config

    decode = msgspec.json.Decoder(_Ev).decode
    config = load_config(kubeconfig)
    async with HotTransport(config) as hot:
        names = await _setup(hot, objects, "lease")
        r = await hot.request("GET", LEASES)
        list_rv = json.loads(r.content)["metadata"]["resourceVersion"]
        print(json.dumps({"names": names}), flush=True)
        state = [
            {"events": 0, "last_rv": int(list_rv), "last_t": 0.0, "closed": False}
            for _ in range(watchers)
        ]
        target = [0]
        all_seen = trio.Event()
        opened = [0]
        all_open = trio.Event()

        async def watch(st: dict[str, Any]) -> None:
            params = {"watch": "true", "resourceVersion": list_rv, "timeoutSeconds": "3600"}
            async with hot.stream("GET", LEASES, params=params) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"watch: HTTP {resp.status}")
                opened[0] += 1
                if opened[0] == watchers:
                    all_open.set()
                tail = b""
                async for data in resp.aiter_bytes():
                    n = data.count(b"\n")
                    if not n:
                        tail += data
                        continue
                    st["events"] += n
                    end = data.rfind(b"\n")
                    start = data.rfind(b"\n", 0, end) + 1
                    line = data[start:end] if start else tail + data[:end]
                    tail = data[end + 1 :]
                    ev = decode(line)
                    if ev.type == "ERROR":
                        raise RuntimeError(f"watch ERROR event: {line[:300]!r}")
                    st["last_rv"] = int(ev.object.metadata.resourceVersion)
                    st["last_t"] = time.monotonic()
                    if target[0] and all(s["closed"] or s["last_rv"] >= target[0] for s in state):
                        all_seen.set()
            st["closed"] = True
            if all(s["closed"] or s["last_rv"] >= target[0] > 0 for s in state):
                all_seen.set()

        async with trio.open_nursery() as nursery:
            for st in state:
                nursery.start_soon(watch, st)
            await all_open.wait()
            lines = _Lines()
            print(json.dumps({"ready": time.process_time()}), flush=True)
            while True:
                try:
                    words = (await lines.next()).split()
                except EOFError:
                    break
                # "until RV": report when every watcher has seen RV (or 10 s have passed);
                # event counts and CPU are cumulative (the orchestrator takes differences).
                target[0] = int(words[1])
                all_seen = trio.Event()
                if not all(s["closed"] or s["last_rv"] >= target[0] for s in state):
                    with trio.move_on_after(10):
                        await all_seen.wait()
                print(json.dumps({"watchers": state, "cpu": time.process_time()}), flush=True)
            nursery.cancel_scope.cancel()


# --- orchestration -----------------------------------------------------------------------------
class _Server:
    def __init__(self, app: str, scheme: Scheme, front: str) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.sandbox",
                "serve",
                "--app",
                app,
                "--scheme",
                scheme,
                "--server",
                front,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("{"):
            self.stop()
            raise RuntimeError("benchmark sandbox did not start")
        self.info = json.loads(line)

    def command(self, line: str) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer: dict[str, Any] = json.loads(self.proc.stdout.readline())
        return answer

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _client(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.sandbox", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def _expect(proc: subprocess.Popen[str], what: str) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait()
        raise RuntimeError(f"benchmark client exited ({proc.returncode}) before '{what}'")
    return line


def _finish(proc: subprocess.Popen[str]) -> int:
    """Close the client's stdin (it exits), wait for it, close its pipes; its exit status."""
    if proc.stdin is not None:
        proc.stdin.close()
    try:
        code = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
    return code


def _say(proc: subprocess.Popen[str], line: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()


def _patch_case(
    app: str, front: str, scheme: Scheme, body: Body, inflight: int, requests: int, repeats: int
) -> PatchCase:
    server = _Server(app, scheme, front)
    try:
        client = _client(
            "patch-client",
            "--kubeconfig",
            server.info["kubeconfig"],
            "--body",
            body,
            "--inflight",
            str(inflight),
            "--requests",
            str(requests),
            "--repeats",
            str(repeats),
        )
        try:
            _expect(client, "ready")
            best_cpu = best_client = float("inf")
            best_rate = 0.0
            share = 0.0
            for _ in range(repeats):
                cpu0 = _cpu_s(server.proc.pid)
                _say(client, "go")
                out = json.loads(_expect(client, "result"))
                cpu = _cpu_s(server.proc.pid) - cpu0
                if requests / out["wall"] > best_rate:
                    best_rate, share = requests / out["wall"], cpu / out["wall"]
                best_cpu = min(best_cpu, cpu / requests)
                best_client = min(best_client, out["cpu"] / requests)
        finally:
            if _finish(client) != 0:
                raise RuntimeError(f"patch client failed ({client.returncode})")
        rss = _peak_rss_mib(server.proc.pid)
    finally:
        server.stop()
    return PatchCase(
        app=app,
        server=front,
        scheme=scheme,
        body=body if app == "sandbox" else "lease",
        inflight=inflight,
        requests=requests,
        patches_per_s=round(best_rate, 1),
        server_cpu_us_per_patch=round(best_cpu * 1e6, 1),
        server_cpu_share=round(share, 2),
        client_cpu_us_per_patch=round(best_client * 1e6, 1),
        server_peak_rss_mib=rss,
    )


def _watch_case(
    front: str, scheme: Scheme, watchers: int, events: int, rate: int, repeats: int, objects: int
) -> WatchCase:
    server = _Server("sandbox", scheme, front)
    best: dict[str, Any] | None = None
    best_cpu = float("inf")
    try:
        client = _client(
            "watch-client",
            "--kubeconfig",
            server.info["kubeconfig"],
            "--watchers",
            str(watchers),
            "--objects",
            str(objects),
        )
        try:
            names = json.loads(_expect(client, "names"))["names"]
            client_cpu = json.loads(_expect(client, "ready"))["ready"]
            seen = [0] * watchers
            for _ in range(repeats):
                cpu0 = _cpu_s(server.proc.pid)
                done = server.command(f"write {events} {rate} " + " ".join(names))
                _say(client, f"until {done['rv']}")
                out = json.loads(_expect(client, "result"))
                cpu = _cpu_s(server.proc.pid) - cpu0
                ws = out["watchers"]
                client_cpu_before, client_cpu = client_cpu, out["cpu"]
                for i, w in enumerate(ws):
                    w["events"], seen[i] = w["events"] - seen[i], w["events"]
                complete = all(w["last_rv"] >= done["rv"] and not w["closed"] for w in ws)
                catch_up = max(w["last_t"] - done["end"] for w in ws) if complete else float("inf")
                delivered = min(w["events"] / max(w["last_t"] - done["start"], 1e-9) for w in ws)
                result = {
                    "write_rate": events / (done["end"] - done["start"]),
                    "delivered": delivered
                    if complete
                    else min(w["events"] for w in ws) / (done["end"] - done["start"]),
                    "kept_up": complete
                    and catch_up <= KEPT_UP_S
                    and all(w["events"] >= events for w in ws),
                    "catch_up_ms": catch_up * 1e3 if complete else -1.0,
                    "share": cpu
                    / max(
                        w_end - done["start"]
                        for w_end in [max(w["last_t"] for w in ws), done["end"]]
                    ),
                    "client_cpu": client_cpu - client_cpu_before,
                }
                best_cpu = min(best_cpu, cpu / events)
                if best is None or (result["kept_up"], result["delivered"]) > (
                    best["kept_up"],
                    best["delivered"],
                ):
                    best = result
        finally:
            _finish(client)
        rss = _peak_rss_mib(server.proc.pid)
    finally:
        server.stop()
    assert best is not None
    return WatchCase(
        server=front,
        scheme=scheme,
        watchers=watchers,
        events=events,
        target_rate=rate,
        write_rate=round(best["write_rate"], 1),
        events_per_s_per_watcher=round(best["delivered"], 1),
        kept_up=best["kept_up"],
        max_catch_up_ms=round(best["catch_up_ms"], 1),
        server_cpu_us_per_event=round(best_cpu * 1e6, 1),
        server_cpu_share=round(best["share"], 2),
        client_cpu_s=round(best["client_cpu"], 3),
        server_peak_rss_mib=rss,
    )


def run(
    *,
    requests: int = 5000,
    repeats: int = 5,
    inflight: Sequence[int] = (16,),
    schemes: Sequence[Scheme] = ("http", "https"),
    servers: Sequence[Server] = ("lean",),
    bodies: Sequence[Body] = BODIES,
    floor: bool = True,
    watchers: int = 10,
    events: int = 20000,
    rates: Sequence[int] = (10000, 0),
    progress: Callable[[str], None] | None = None,
) -> SandboxBenchResult:
    """Every case in its own server and client processes; ``watchers=0`` skips the watch cases.

    ``progress`` is told of each case as it starts (the whole run takes minutes).
    """
    load = "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())
    patch: list[PatchCase] = []
    watch: list[WatchCase] = []
    per_level = (1 if floor else 0) + len(bodies)
    total = (
        len(servers) * len(schemes) * (len(inflight) * per_level + (len(rates) if watchers else 0))
    )
    done = 0

    def starting(what: str) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(f"case {done}/{total}: {what}")

    for front in servers:
        for scheme in schemes:
            for level in inflight:
                if floor:
                    starting(f"PATCH, empty app, {front} {scheme}, {level} in flight")
                    patch.append(
                        _patch_case("empty", front, scheme, "lease", level, requests, repeats)
                    )
                for body in bodies:
                    starting(f"PATCH {body}, {front} {scheme}, {level} in flight")
                    patch.append(
                        _patch_case("sandbox", front, scheme, body, level, requests, repeats)
                    )
            if watchers:
                for rate in rates:
                    starting(
                        f"watch, {front} {scheme}, {watchers} watchers, {rate or 'max'} writes/s"
                    )
                    watch.append(
                        _watch_case(front, scheme, watchers, events, rate, repeats, objects=100)
                    )
    command = (
        f"kubemock-fleet bench sandbox --requests {requests} --repeats {repeats}"
        + "".join(f" --inflight {n}" for n in inflight)
        + "".join(f" --scheme {s}" for s in schemes)
        + "".join(f" --server {s}" for s in servers)
        + f" --watchers {watchers} --events {events}"
        + "".join(f" --rate {r}" for r in rates)
    )
    return SandboxBenchResult(
        machine=f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
        python=platform.python_version(),
        command=command,
        load=load,
        patch=patch,
        watch=watch,
    )


def format_report(result: SandboxBenchResult) -> str:
    """Markdown tables: PATCH cases, then watch cases."""
    lines = [
        "| server | app | scheme | body | in flight | PATCH/s | server CPU/PATCH | PATCH/s per server core "
        "| server CPU share | client CPU/PATCH | server peak RSS |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in result.patch:
        lines.append(
            f"| {c.server} | {c.app} | {c.scheme} | {c.body} | {c.inflight} | {c.patches_per_s:,.0f} | "
            f"{c.server_cpu_us_per_patch:,.0f} µs | "
            f"{1e6 / c.server_cpu_us_per_patch if c.server_cpu_us_per_patch else 0:,.0f} | {c.server_cpu_share:.2f} | "
            f"{c.client_cpu_us_per_patch:,.0f} µs | {c.server_peak_rss_mib:.0f} MiB |"
        )
    if result.watch:
        lines += [
            "",
            "| server | scheme | watchers | target writes/s | writes/s | events/s per watcher (slowest) | kept up | "
            "catch-up | server CPU/event | events/s per server core | server CPU share | server peak RSS |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for w in result.watch:
            lines.append(
                f"| {w.server} | {w.scheme} | {w.watchers} | {w.target_rate or 'max'} | {w.write_rate:,.0f} | "
                f"{w.events_per_s_per_watcher:,.0f} | {'yes' if w.kept_up else 'NO'} | "
                f"{w.max_catch_up_ms:,.0f} ms | {w.server_cpu_us_per_event:,.0f} µs | "
                f"{1e6 / w.server_cpu_us_per_event if w.server_cpu_us_per_event else 0:,.0f} | "
                f"{w.server_cpu_share:.2f} | {w.server_peak_rss_mib:.0f} MiB |"
            )
    return "\n".join(lines)


def _main(argv: Sequence[str] | None = None) -> None:
    """The processes :func:`run` starts: ``serve``, ``patch-client``, ``watch-client``."""
    parser = argparse.ArgumentParser(prog="python -m bench.sandbox")
    sub = parser.add_subparsers(dest="role", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--app", choices=("sandbox", "empty"), default="sandbox")
    s.add_argument("--scheme", choices=("http", "https"), default="http")
    s.add_argument("--server", choices=SERVERS, default="lean")
    p = sub.add_parser("patch-client")
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--body", choices=BODIES, default="lease")
    p.add_argument("--inflight", type=int, required=True)
    p.add_argument("--requests", type=int, required=True)
    p.add_argument("--repeats", type=int, required=True)
    w = sub.add_parser("watch-client")
    w.add_argument("--kubeconfig", required=True)
    w.add_argument("--watchers", type=int, required=True)
    w.add_argument("--objects", type=int, default=100)
    args = parser.parse_args(argv)
    if args.role == "serve":
        trio.run(_serve_main, args.app, args.scheme, args.server)
    elif args.role == "patch-client":
        trio.run(
            _patch_client, args.kubeconfig, args.body, args.inflight, args.requests, args.repeats
        )
    else:
        trio.run(_watch_client, args.kubeconfig, args.watchers, args.objects)


if __name__ == "__main__":  # pragma: no cover - run as subprocesses by run()
    _main()
