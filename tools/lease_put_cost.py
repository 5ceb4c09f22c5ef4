"""kube-apiserver's CPU per node Lease renewal (PUT), JSON against protobuf.

Run from the repository root against a real control plane on this machine (the tool
reads kube-apiserver's CPU from ``/proc``, so it must run where kube-apiserver does)::

    .venv/bin/kubemock-fleet up --control-plane real --binaries ../shared/realk8s \\
        --shards 0 --kubeconfig-out /tmp/k.kubeconfig &
    .venv/bin/python tools/lease_put_cost.py /tmp/k.kubeconfig --leases 2000 --seconds 20

It creates ``--leases`` Leases in kube-node-lease (``lease-cost-<i>``), then renews them
round-robin from 16 threads for ``--seconds`` per round, alternating JSON (what the shard
sends) and protobuf (what a kubelet's client-go sends), and prints kube-apiserver's
CPU-seconds per PUT for each round. It answers one question before any work on the
shard's wire format: would protobuf Lease renewals take load off the apiserver? The
protobuf body is hand-encoded (``runtime.Unknown`` around a ``coordination.k8s.io/v1``
Lease: name, namespace, resourceVersion, holderIdentity, leaseDurationSeconds,
renewTime), the answer's resourceVersion read back from the same encoding.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import ssl
import tempfile
import threading
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import yaml

NS = "kube-node-lease"
LEASES = f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases"
THREADS = 16
PROTOBUF = "application/vnd.kubernetes.protobuf"


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        if not n:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


def _field(number: int, value: int | bytes) -> bytes:
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    return _varint((number << 3) | 2) + _varint(len(value)) + value


def lease_protobuf(name: str, resource_version: str, now: float) -> bytes:
    """A Lease PUT body as client-go's protobuf serializer frames it."""
    meta = _field(1, name.encode()) + _field(3, NS.encode()) + _field(6, resource_version.encode())
    seconds = int(now)
    micro = _field(1, seconds) + _field(2, int((now - seconds) * 1e6) * 1000)
    spec = _field(1, name.encode()) + _field(2, 40) + _field(4, micro)
    raw = _field(1, meta) + _field(2, spec)
    type_meta = _field(1, b"coordination.k8s.io/v1") + _field(2, b"Lease")
    return b"k8s\x00" + _field(1, type_meta) + _field(2, raw)


def _fields(buf: bytes) -> dict[int, int | bytes]:
    """The first value of each field of one protobuf message (varint and bytes only)."""
    out: dict[int, int | bytes] = {}
    i = 0

    def varint() -> int:
        nonlocal i
        value = shift = 0
        while True:
            byte = buf[i]
            i += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    while i < len(buf):
        key = varint()
        if key & 7 == 0:
            out.setdefault(key >> 3, varint())
        elif key & 7 == 2:
            length = varint()
            out.setdefault(key >> 3, buf[i : i + length])
            i += length
        else:
            raise ValueError(f"wire type {key & 7} not expected in a Lease")
    return out


def resource_version_of(body: bytes) -> str:
    if body[:4] != b"k8s\x00":
        raise ValueError(f"not a protobuf answer: {body[:40]!r}")
    raw = _fields(body[4:])[2]  # runtime.Unknown's raw: the Lease
    meta = _fields(raw)[1]  # type: ignore[arg-type]
    version = _fields(meta)[6]  # type: ignore[arg-type]
    if not isinstance(version, bytes):
        raise ValueError("a Lease answer without its resourceVersion")
    return version.decode()


def _micro_time(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _apiserver_pid(port: str) -> int:
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = open(f"/proc/{entry}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if argv[0].endswith(b"kube-apiserver") and any(
            arg == f"--secure-port={port}".encode() for arg in argv
        ):
            return int(entry)
    raise SystemExit(f"no kube-apiserver with --secure-port={port} on this machine")


def _tls(kubeconfig: dict[str, Any]) -> tuple[str, ssl.SSLContext]:
    cluster = kubeconfig["clusters"][0]["cluster"]
    user = kubeconfig["users"][0]["user"]
    folder = tempfile.mkdtemp()

    def write(name: str, data: str) -> str:
        path = os.path.join(folder, name)
        with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
            f.write(base64.b64decode(data))
        return path

    context = ssl.create_default_context(cafile=write("ca", cluster["certificate-authority-data"]))
    context.load_cert_chain(
        write("crt", user["client-certificate-data"]), write("key", user["client-key-data"])
    )
    return cluster["server"], context


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("kubeconfig")
    parser.add_argument("--leases", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=3, help="pairs of JSON and protobuf rounds")
    args = parser.parse_args()
    server, context = _tls(yaml.safe_load(open(args.kubeconfig)))
    pid = _apiserver_pid(server.rsplit(":", 1)[1])
    names = [f"lease-cost-{i}" for i in range(args.leases)]
    versions: dict[str, str] = {}
    with httpx.Client(base_url=server, verify=context) as client:
        for name in names:
            lease = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": name, "namespace": NS},
                "spec": {"holderIdentity": name, "leaseDurationSeconds": 40},
            }
            answer = client.post(LEASES, json=lease)
            if answer.status_code == 409:
                answer = client.get(f"{LEASES}/{name}")
            answer.raise_for_status()
            versions[name] = answer.json()["metadata"]["resourceVersion"]

    def round_(encoding: str) -> None:
        stop = time.monotonic() + args.seconds
        done, failed = [0], [0]
        lock = threading.Lock()

        def renew(first: int) -> None:
            with httpx.Client(base_url=server, verify=context) as client:
                i = first
                while time.monotonic() < stop:
                    name = names[i % len(names)]
                    i += THREADS
                    now = time.time()
                    if encoding == "json":
                        lease = {
                            "apiVersion": "coordination.k8s.io/v1",
                            "kind": "Lease",
                            "metadata": {
                                "name": name,
                                "namespace": NS,
                                "resourceVersion": versions[name],
                            },
                            "spec": {
                                "holderIdentity": name,
                                "leaseDurationSeconds": 40,
                                "renewTime": _micro_time(now),
                            },
                        }
                        body, media = json.dumps(lease).encode(), "application/json"
                    else:
                        body, media = lease_protobuf(name, versions[name], now), PROTOBUF
                    answer = client.put(
                        f"{LEASES}/{name}",
                        content=body,
                        headers={"Content-Type": media, "Accept": media},
                    )
                    ok = answer.status_code == 200
                    if ok:
                        versions[name] = (
                            answer.json()["metadata"]["resourceVersion"]
                            if encoding == "json"
                            else resource_version_of(answer.content)
                        )
                    with lock:
                        (done if ok else failed)[0] += 1

        before, started = _cpu_seconds(pid), time.monotonic()
        threads = [threading.Thread(target=renew, args=(k,)) for k in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        cpu, took = _cpu_seconds(pid) - before, time.monotonic() - started
        print(
            f"{encoding:8} {done[0]:6} PUTs in {took:.1f} s ({done[0] / took:.0f}/s), "
            f"{failed[0]} failed; kube-apiserver {cpu:.2f} CPU-s = "
            f"{1e3 * cpu / max(done[0], 1):.3f} ms a PUT; load {os.getloadavg()[0]:.1f}"
        )

    for _ in range(args.rounds):
        round_("json")
        round_("protobuf")


if __name__ == "__main__":
    main()
