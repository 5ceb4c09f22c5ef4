"""What the steps of the two script kinds share: their timing, their order, duty cycles.

A MockStatus step (``_mockstatus``) and a NodeScript step (``_nodescript``) each
take effect ``after`` a Go duration counted from a creationTimestamp (the pod's,
the NodeScript's), at a point of ``[after, after+jitter]`` drawn per object:
:class:`TimedStep`, whose subclasses say in their field descriptions what the
count starts from. The steps of one script strictly increase in ``after``
(:func:`check_later`), and both kinds script a duty cycle on a period (a readiness
flap's ``notReadyFor``, a Lease flap's ``pausedFor``) that must be more than 0 and
less than the period (:func:`check_duty_cycle`): one message for each fault, the
same in both kinds.
"""

from __future__ import annotations

from ._duration import parse_go_duration
from ._types import CRModel, GoDuration

__all__ = ["TimedStep", "check_duty_cycle", "check_later"]


class TimedStep(CRModel):
    """A step that takes effect `after` a Go duration, plus a drawn `jitter`."""

    after: GoDuration
    jitter: GoDuration | None = None

    def after_seconds(self) -> float:
        """``after`` in seconds."""
        return parse_go_duration(self.after) / 1e9

    def jitter_seconds(self) -> float:
        """``jitter`` in seconds (0 without one)."""
        return 0.0 if self.jitter is None else parse_go_duration(self.jitter) / 1e9


def check_later(previous: TimedStep, step: TimedStep, index: int, where: str = "") -> None:
    """ValueError unless step ``index`` takes effect later than ``previous`` (step
    ``index - 1``); ``where`` prefixes the message (``branches[0]: ``)."""
    if parse_go_duration(step.after) <= parse_go_duration(previous.after):
        raise ValueError(
            f'{where}step {index}: after "{step.after}" must be later than '
            f'step {index - 1}\'s "{previous.after}"'
        )


def check_duty_cycle(what: str, period: str, part: str) -> None:
    """ValueError unless ``part`` of every ``period`` is more than 0 and less than it;
    ``what`` names the part (``flap: pausedFor``)."""
    if not 0 < parse_go_duration(part) < parse_go_duration(period):
        raise ValueError(f"{what} must be more than 0 and less than period")
