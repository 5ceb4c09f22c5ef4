"""``kubemock-fleet bench``: what its command line does with signals."""

from __future__ import annotations

from pathlib import Path


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


def test_the_interrupted_line_says_what_the_cleanup_did(tmp_path: Path) -> None:
    """It once said "objects deleted; partial report in DIR" while 3,805 were left and DIR
    did not exist: the line now comes from the partial report, or says there is none."""
    import msgspec

    from bench import write_report
    from fleet.cli._bench import _interrupted
    from tests.bench.test_report import _report

    assert _interrupted(tmp_path / "none", "cafe") == (
        f"interrupted: no report was written to {tmp_path / 'none'}; "
        "objects of run cafe may be left"
    )
    base = _report()
    cleanup = type(base.cleanup)
    for result, said in (
        (cleanup(deleted=10, leftover=0), "10 objects of run cafe deleted, none left"),
        (
            cleanup(deleted=7, leftover=3805, errors=("cleanup did not finish within 120 s",)),
            "7 objects of run cafe deleted, 3805 left (`kubectl delete ... -l "
            "bench.kubemock-fleet.io/run=cafe` deletes them)",
        ),
    ):
        write_report(msgspec.structs.replace(base, cleanup=result), tmp_path / "report.json")
        assert _interrupted(tmp_path, "cafe") == (
            f"interrupted: {said}; partial report in {tmp_path}"
        )
