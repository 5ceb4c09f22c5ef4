"""``kubemock-fleet bench``: what its command line does with signals."""

from __future__ import annotations


async def test_a_signal_cancels_the_scenario_alone_and_lets_its_cleanup_run() -> None:
    # Ctrl-C must not tear down the bench's own apiserver under the scenario's feet: the
    # signal cancels the scenario, its shielded cleanup runs, then the CLI exits 130.
    import os
    import signal

    import trio

    from fleet.cli._bench import _Interrupted, _until_signal

    started = trio.Event()
    cleaned_up: list[bool] = []

    async def scenario() -> None:
        try:
            started.set()
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await trio.sleep(0.01)  # the cleanup still gets to talk to the apiserver
                cleaned_up.append(True)

    async def interrupt() -> None:
        await started.wait()
        os.kill(os.getpid(), signal.SIGINT)

    interrupted = False
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(interrupt)
            await _until_signal(scenario)
    except* _Interrupted:
        interrupted = True
    assert interrupted
    assert cleaned_up == [True]


async def test_a_scenario_that_ends_returns_its_result_and_installs_nothing_after() -> None:
    import signal

    from fleet.cli._bench import _until_signal

    async def scenario() -> str:
        return "report"

    before = signal.getsignal(signal.SIGINT)
    assert await _until_signal(scenario) == "report"
    assert signal.getsignal(signal.SIGINT) is before
