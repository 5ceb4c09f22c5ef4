"""metrics-server's scrape, as load: ``/metrics/resource`` of every node, every interval.

:mod:`bench.shard`'s ``scrape`` case runs this in its own process (its CPU is never the
shard's) against one shard's kubelet API. Each round asks every node once for
``/nodes/<node>/metrics/resource`` (the path the ``metrics.k8s.io/resource-metrics-path``
annotation gives KWOK-aware metrics-server), each request started after a random delay
within ``spread`` seconds, as metrics-server staggers its scrapes (8 ms a node, at most
4 s); a round starts every ``interval`` seconds (metrics-server's ``--metric-resolution``,
15 s by default). Requests go over ``connections`` persistent TLS connections with a
client certificate of the CA the shard trusts: metrics-server keeps its connections to
kubelets alive between rounds, so after the first round no TLS handshake is in the
figures (the first round's are).

HTTP/1.1 is framed by hand on asyncio streams (``Content-Length`` answers, as the shard
sends them). One JSON line per round on stdout: ``round``, ``wall_s`` (first request to
last answer), ``ok``, ``failed``, ``bytes``, ``client_cpu_s``.
``python -m bench._kubeletscrape --port P --nodes N --cert C --key K``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import ssl
import sys
import time

__all__ = ["scrape_round"]

MAX_SPREAD = 4.0
"""metrics-server's cap on the stagger of one round's requests, seconds."""
SPREAD_PER_NODE = 0.008
"""metrics-server's stagger per node, seconds."""
REQUEST_TIMEOUT = 10.0
"""metrics-server's default scrape timeout, seconds."""


class _Connection:
    def __init__(self, host: str, port: int, context: ssl.SSLContext) -> None:
        self.host, self.port, self.context = host, port, context
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> tuple[int, int]:
        """(status, body bytes) of one GET; reconnects when the connection was closed."""
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(
                self.host, self.port, ssl=self.context
            )
        assert self.reader is not None
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await self.reader.readexactly(length)
        return status, length

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def scrape_round(
    connections: list[_Connection], nodes: list[str], spread: float
) -> dict[str, float]:
    """One round: every node once, staggered over ``spread`` seconds."""
    start = time.monotonic()
    due = sorted((random.uniform(0.0, spread), node) for node in nodes)
    queue: asyncio.Queue[tuple[float, str]] = asyncio.Queue()
    for item in due:
        queue.put_nowait(item)
    totals = {"ok": 0, "failed": 0, "bytes": 0}

    async def worker(conn: _Connection) -> None:
        while not queue.empty():
            at, node = queue.get_nowait()
            wait = start + at - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                status, size = await asyncio.wait_for(
                    conn.get(f"/nodes/{node}/metrics/resource"), REQUEST_TIMEOUT
                )
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
                conn.close()
                conn.writer = None
                totals["failed"] += 1
                continue
            if status == 200:
                totals["ok"] += 1
                totals["bytes"] += size
            else:
                totals["failed"] += 1

    await asyncio.gather(*(worker(c) for c in connections))
    return {**totals, "wall_s": round(time.monotonic() - start, 3)}


async def _main(args: argparse.Namespace) -> None:
    context = ssl.create_default_context(cafile=None)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the shard's serving certificate is its own
    context.load_cert_chain(args.cert, args.key)
    nodes = [f"node-{i:05d}" for i in range(args.nodes)]
    connections = [_Connection("127.0.0.1", args.port, context) for _ in range(args.connections)]
    spread = min(MAX_SPREAD, SPREAD_PER_NODE * len(nodes))
    next_round = time.monotonic()
    for number in range(args.rounds):
        cpu0 = time.process_time()
        result = await scrape_round(connections, nodes, spread)
        result["client_cpu_s"] = round(time.process_time() - cpu0, 3)
        print(json.dumps({"round": number, **result}), flush=True)
        next_round += args.interval
        await asyncio.sleep(max(0.0, next_round - time.monotonic()))
    for conn in connections:
        conn.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--interval", type=float, default=15.0)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=64)
    asyncio.run(_main(parser.parse_args(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    main()
