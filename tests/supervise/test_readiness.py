"""The readiness poll of a started process, on trio's autojump clock."""

from __future__ import annotations

import pytest
import trio

from fleet.errors import ComponentError
from fleet.supervise import NO_ANSWER, Probe, wait_ready


def _answers(*answers: str | None) -> tuple[list[float], Probe]:
    """A probe answering ``answers`` in turn (the last one from then on), and when it ran."""
    times: list[float] = []
    queue = list(answers)

    async def probe() -> str | None:
        times.append(trio.current_time())
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return times, probe


async def test_ready_at_the_first_ready_answer(autojump_clock: trio.abc.Clock) -> None:
    times, probe = _answers("HTTP 503: etcd", "ConnectError: refused", None)
    start = trio.current_time()
    await wait_ready(probe, deadline=start + 30, interval=0.5, fail=ComponentError)
    assert [t - start for t in times] == [0.0, 0.5, 1.0]


async def test_at_the_deadline_the_last_answer_is_the_error(
    autojump_clock: trio.abc.Clock,
) -> None:
    times, probe = _answers("HTTP 500: not yet", "HTTP 503: [-]etcd failed")
    start = trio.current_time()
    with pytest.raises(ComponentError, match=r"^x: HTTP 503: \[-\]etcd failed$"):
        await wait_ready(
            probe,
            deadline=start + 2,
            interval=0.5,
            fail=lambda last: ComponentError(f"x: {last}"),
        )
    assert trio.current_time() == start + 2
    assert [t - start for t in times] == [0.0, 0.5, 1.0, 1.5]  # the sleep to 2 is cut off


async def test_a_hanging_probe_is_cut_at_the_deadline(autojump_clock: trio.abc.Clock) -> None:
    async def hangs() -> str | None:
        await trio.sleep_forever()
        raise AssertionError

    start = trio.current_time()
    with pytest.raises(ComponentError, match=f"^{NO_ANSWER}$"):
        await wait_ready(hangs, deadline=start + 30, interval=0.1, fail=ComponentError)
    assert trio.current_time() == start + 30


async def test_a_dead_process_fails_before_the_next_probe(autojump_clock: trio.abc.Clock) -> None:
    times, probe = _answers("ConnectError: refused")
    start = trio.current_time()

    def alive() -> None:
        if trio.current_time() - start >= 1:
            raise ComponentError("kube-apiserver exited with code 1")

    with pytest.raises(ComponentError, match="exited with code 1"):
        await wait_ready(
            probe,
            deadline=start + 30,
            interval=0.5,
            fail=ComponentError,
            alive=alive,
        )
    assert trio.current_time() == start + 1
    assert len(times) == 2
