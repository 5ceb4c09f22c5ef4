"""Reloader: re-reads a kubeconfig when credentials fail, at most every RELOAD_MIN_INTERVAL."""

from __future__ import annotations

import ssl

import trio

from fleet.errors import ConfigError, ConnectError
from fleet.kube._cluster import RELOAD_MIN_INTERVAL, ClusterConfig, Reloader, tls_failure


async def test_reload_is_rate_limited_and_survives_an_unreadable_source(
    autojump_clock: trio.abc.Clock,
) -> None:
    start = trio.current_time()
    reads: list[float] = []
    broken = False

    def reload() -> ClusterConfig:
        reads.append(trio.current_time() - start)
        if broken:
            raise ConfigError("kubeconfig: YAML syntax error")
        return ClusterConfig(server="https://x", reload=reload)

    reloader = Reloader(ClusterConfig(server="https://x", reload=reload))
    assert reloader.reload("401") is not None
    assert reloader.reload("401") is None  # too soon
    await trio.sleep(RELOAD_MIN_INTERVAL)
    broken = True
    assert reloader.reload("401") is None  # unreadable now: keep what we have
    await trio.sleep(RELOAD_MIN_INTERVAL)
    broken = False
    assert reloader.reload("401") is not None
    assert reads == [0.0, RELOAD_MIN_INTERVAL, 2 * RELOAD_MIN_INTERVAL]


def test_nothing_to_reload_without_a_source() -> None:
    assert Reloader(ClusterConfig(server="https://x")).reload("401") is None


def test_tls_failure_follows_causes() -> None:
    try:
        try:
            raise ssl.SSLCertVerificationError("certificate verify failed")
        except ssl.SSLError as exc:
            raise ConnectError("cannot connect") from exc
    except ConnectError as exc:
        assert tls_failure(exc)
    assert not tls_failure(ConnectError("refused"))
