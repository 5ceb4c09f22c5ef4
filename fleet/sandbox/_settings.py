"""Settings of the sandbox apiserver: one small frozen object, every limit named.

The CLI (``kubemock-fleet sandbox``), ``kubemock-fleet up`` and the test
fixtures build one :class:`SandboxSettings` and hand it to
:func:`fleet.sandbox.serve_sandbox`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fleet.sandbox._kubeletproxy import KubeletClientCert


@dataclass(frozen=True)
class SandboxSettings:
    """How the sandbox apiserver listens and what it remembers."""

    host: str = "127.0.0.1"
    """Address to bind. Loopback by default: the sandbox has one admin token and no RBAC."""
    port: int = 0
    """TCP port; 0 picks a free one (the chosen URL is reported on start)."""
    tls: bool = True
    """Serve https with a throwaway CA (its certificate goes into the kubeconfig). On by default:
    kubectl (client-go) never sends a bearer token over plain http."""
    require_token: bool | None = None
    """Refuse requests without the bearer token (401). None: required over https, not over
    plain http, where no client-go client would send it (bind to loopback then)."""
    kubeconfig_out: Path | None = None
    """Where to write the kubeconfig (mode 0600); None: a file in a fresh temporary directory."""
    token: str | None = None
    """Bearer token clients must send; None generates a random one at start."""
    data_file: Path | None = None
    """With a path, the store is loaded from it at start and saved to it on clean shutdown."""
    watch_history: int = 1000
    """Events kept per resource for watches and consistent pages (the real watch cache keeps
    100 to a few thousand). A watch from an older resourceVersion gets 410 Gone."""
    watch_history_window: float = 75.0
    """Seconds of events kept beyond ``watch_history`` (up to 102,400 per resource): the
    real watch cache sizes itself to keep 75 s (``eventFreshDuration``). Without it, at
    kwok-ci load (~500 pod events/s) 1,000 events were 2 s: a paged LIST of 10,000 pods
    outlived its snapshot and got 410 on a later page, and the client listed again, in a
    loop. 0: the count alone."""
    watch_queue: int = 1000
    """Events buffered per watcher; a watcher that falls this far behind is closed, as the
    real apiserver closes a watcher that cannot keep up (the client re-lists)."""
    bookmark_interval: float = 60.0
    """Seconds between BOOKMARK events on watches that allow them (the real apiserver: ~1 min)."""
    bookmark_before_timeout: float = 2.0
    """A bookmark is also sent this long before a watch's timeoutSeconds ends, as the real one does."""
    max_watch_timeout: float = 1800.0
    """Upper bound of a watch's duration when the client names none (--min-request-timeout x2)."""
    too_large_rv_wait: float = 3.0
    """Seconds a list naming a future resourceVersion waits before 504 (the real apiserver: 3 s)."""
    max_body_bytes: int = 3 * 1024 * 1024
    """Largest request body accepted (the real apiserver's limit is 3 MiB)."""
    header_read_timeout: float = 32.0
    """Seconds a request head may take once its first byte came (the real apiserver's
    ReadHeaderTimeout: 32 s); then 408 and the connection is closed. Waiting for that
    first byte is keep-alive idleness, bounded separately (75 s)."""
    body_read_timeout: float = 60.0
    """Seconds a request body may take to arrive (the real apiserver's request timeout,
    60 s); then 408 and the connection is closed. Bodies are at most 3 MiB."""
    max_connections: int = 4096
    """Connections served at once (HTTP/1.1 and HTTP/2 alike); one more is closed at accept.
    A shard uses ~20 to ~120 (its hot connections, its watches, the general client's pool),
    plus one HTTP/2 connection per node under the kubelet traffic profile; kubectl a few.
    4096 fits dozens of lean shards or ~3,500 nodes in ``kubelet`` mode and stays under
    common file-descriptor limits; more: ``sandbox --max-connections``, ``up
    --sandbox-max-connections`` (each connection is a file descriptor on both sides:
    ``ulimit -n``)."""
    max_list_limit: int = 100_000
    """Upper bound of items a single page may hold, whatever limit the client asks."""
    event_ttl: float = 3600.0
    """Seconds an Event is kept after its last write (kube-apiserver's ``--event-ttl``, 1 h);
    0 keeps them for ever. Loops that tell about every pod would otherwise fill the memory."""
    service_cidr: str = "10.96.0.0/16"
    """Where Services' cluster IPs come from (kind's range); ``kubernetes`` gets its ``.1``."""
    lean_http1: bool = True
    """Serve HTTP/1.1 with the sandbox's own lean server (``_http1``) and hand only HTTP/2
    to hypercorn. False: hypercorn serves everything (it costs ~450 µs of CPU per request
    on the dev box, more than the budget of 3,000 PATCHes/s; docs/performance.md)."""
    kubelet_client: KubeletClientCert | None = field(default=None, repr=False)
    """The client certificate ``pods/log`` and ``nodes/proxy`` present to kubelets (the
    apiserver's ``--kubelet-client-certificate``); None: one is generated at start, its CA
    written next to the kubeconfig for the fleet's shards to trust."""
    wall_clock: Callable[[], float] = field(default=time.time, repr=False)
    """Wall clock for creationTimestamp and friends (injected in tests)."""
