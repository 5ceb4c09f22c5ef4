"""What a command run in a fake container answers: scripted per pod, a few built-ins, a shell.

Scripted replies, by annotation on the pod (JSON, the command as its words joined by one
space; ``<annotation>.<container>`` for one container)::

    fleet.mock.zhizuqiu.cn/exec: |
      {"cat /etc/hostname": {"stdout": "web-1\\n"},
       "/healthcheck": {"stderr": "unhealthy\\n", "exitCode": 3}}

Scripts are looked up first, then the built-ins: ``echo``, ``true``, ``false``, ``exit N``,
``hostname``, ``pwd``, ``whoami``, ``id``, ``uname``, ``date``, ``env``/``printenv``,
``sleep N``, and ``sh -c '...'`` / ``bash -c '...'`` (the line run by the same rules).
``sh``, ``bash``, ``ash`` alone are an interactive shell (``_exec`` drives it) that runs each
line it reads by these rules. Anything else, run directly, fails as a container runtime
fails to exec a missing binary; in a shell it is ``not found`` with exit code 127.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from shards._kubeletapi._view import PodInfo

__all__ = ["ANNOTATION_EXEC", "SHELLS", "Outcome", "run_argv", "run_line"]

ANNOTATION_EXEC = "fleet.mock.zhizuqiu.cn/exec"
SHELLS = frozenset({"sh", "bash", "ash", "/bin/sh", "/bin/bash", "/bin/ash", "/usr/bin/bash"})
NOT_FOUND = 127
"""A shell's exit code for a command it cannot find."""


@dataclass(frozen=True, slots=True)
class Outcome:
    stdout: str = ""
    stderr: str = ""
    exit_code: int = 0
    missing: bool = False
    """The binary does not exist (run directly: the runtime's exec error, not an exit code)."""
    sleep: float = 0.0
    """Seconds to wait before answering (``sleep N``)."""
    exit_shell: bool = False
    """``exit``: the shell running it ends with :attr:`exit_code`."""


def _scripts(pod: PodInfo, container: str) -> Mapping[str, object]:
    text = pod.annotations.get(f"{ANNOTATION_EXEC}.{container}") or pod.annotations.get(
        ANNOTATION_EXEC
    )
    if not text:
        return {}
    try:
        scripts = json.loads(text)
    except ValueError:
        return {}
    return scripts if isinstance(scripts, dict) else {}


def _scripted(reply: object) -> Outcome:
    if isinstance(reply, str):
        return Outcome(stdout=reply)
    if not isinstance(reply, dict):
        return Outcome()
    code = reply.get("exitCode", 0)
    return Outcome(
        stdout=str(reply.get("stdout", "")),
        stderr=str(reply.get("stderr", "")),
        exit_code=code if isinstance(code, int) else 1,
    )


def run_argv(
    argv: Sequence[str], pod: PodInfo, container: str, wall: Callable[[], datetime]
) -> Outcome:
    """The outcome of running ``argv`` (not an interactive shell) in ``container``."""
    if not argv:
        return Outcome(missing=True)
    scripts = _scripts(pod, container)
    key = " ".join(argv)
    if key in scripts:
        return _scripted(scripts[key])
    name, args = argv[0], list(argv[1:])
    base = name.rsplit("/", 1)[-1]
    if base in ("sh", "bash", "ash") and len(args) >= 2 and args[0] == "-c":
        return run_line(args[1], pod, container, wall)
    if base == "echo":
        newline = not (args and args[0] == "-n")
        words = args[1:] if not newline else args
        return Outcome(stdout=" ".join(words) + ("\n" if newline else ""))
    if base == "true":
        return Outcome()
    if base == "false":
        return Outcome(exit_code=1)
    if base == "exit":
        code = int(args[0]) if args and args[0].lstrip("-").isdigit() else 0
        return Outcome(exit_code=code % 256, exit_shell=True)
    if base == "hostname":
        return Outcome(stdout=pod.name + "\n")
    if base == "pwd":
        return Outcome(stdout="/\n")
    if base == "whoami":
        return Outcome(stdout="root\n")
    if base == "id":
        return Outcome(stdout="uid=0(root) gid=0(root) groups=0(root)\n")
    if base == "uname":
        return Outcome(
            stdout=("Linux " + pod.name + " 6.1.0-kubemock" if "-a" in args else "Linux") + "\n"
        )
    if base == "date":
        return Outcome(stdout=wall().astimezone(UTC).strftime("%a %b %d %H:%M:%S UTC %Y") + "\n")
    if base in ("env", "printenv"):
        env = {
            "HOSTNAME": pod.name,
            "HOME": "/root",
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "KUBERNETES_SERVICE_HOST": "10.96.0.1",
            "KUBERNETES_SERVICE_PORT": "443",
        }
        if args:
            values = [env[a] for a in args if a in env]
            return Outcome(stdout="".join(v + "\n" for v in values), exit_code=0 if values else 1)
        return Outcome(stdout="".join(f"{k}={v}\n" for k, v in env.items()))
    if base == "sleep":
        try:
            return Outcome(sleep=max(float(args[0]), 0.0))
        except (IndexError, ValueError):
            return Outcome(stderr="sleep: invalid time interval\n", exit_code=1)
    return Outcome(missing=True)


def run_line(line: str, pod: PodInfo, container: str, wall: Callable[[], datetime]) -> Outcome:
    """The outcome of one shell line (scripts match the line as typed, then its words)."""
    line = line.strip()
    if not line:
        return Outcome()
    scripts = _scripts(pod, container)
    if line in scripts:
        return _scripted(scripts[line])
    try:
        argv = shlex.split(line)
    except ValueError as exc:
        return Outcome(stderr=f"sh: syntax error: {exc}\n", exit_code=2)
    outcome = run_argv(argv, pod, container, wall)
    if outcome.missing:
        return Outcome(stderr=f"sh: {argv[0]}: not found\n", exit_code=NOT_FOUND)
    return outcome
