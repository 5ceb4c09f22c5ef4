"""``kubemock-fleet up`` in a child process, and kubectl against it: shared by test_up and
test_getting_started.

:func:`up_process` starts ``python -m fleet up --port 0 --kubeconfig-out <tmp>``
(plus the test's flags), collects its stdout and stderr lines in background
threads, and returns once it printed the ``export KUBECONFIG=`` line. On the
way out a still-running process gets SIGTERM, then SIGKILL after
:data:`STOP_TIMEOUT`. :func:`kubectl` runs the real kubectl with that
kubeconfig.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

KUBECTL = "/usr/bin/kubectl"
START_TIMEOUT = 30.0
"""Seconds ``up`` may take to print its kubeconfig (Python start, TLS CA, CRDs)."""
STOP_TIMEOUT = 15.0
"""Seconds a stop may take: the shard children's grace (10 s) and some."""
EXPORT = "  export KUBECONFIG="


@dataclass
class UpProcess:
    process: subprocess.Popen[str]
    kubeconfig: Path
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    lines: queue.Queue[str] = field(default_factory=queue.Queue)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        """Send ``signum`` and wait for the exit code (and the rest of the output)."""
        self.process.send_signal(signum)
        return self.process.wait(timeout=timeout)

    def wait_for_line(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"no line containing {text!r} within {timeout} s: {self.stdout} {self.stderr}"
                )
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if text in line:
                return line


def _collect(stream: IO[str], into: list[str], lines: queue.Queue[str] | None) -> None:
    for line in stream:
        into.append(line.rstrip("\n"))
        if lines is not None:
            lines.put(line.rstrip("\n"))


@contextmanager
def up_process(tmp_path: Path, *args: str) -> Iterator[UpProcess]:
    kubeconfig = tmp_path / "up.kubeconfig"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fleet",
            "up",
            "--port",
            "0",
            "--kubeconfig-out",
            str(kubeconfig),
            *args,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        start_new_session=True,
    )
    up = UpProcess(process, kubeconfig)
    assert process.stdout is not None and process.stderr is not None
    readers = [
        threading.Thread(target=_collect, args=(process.stdout, up.stdout, up.lines), daemon=True),
        threading.Thread(target=_collect, args=(process.stderr, up.stderr, None), daemon=True),
    ]
    for reader in readers:
        reader.start()
    try:
        up.wait_for_line(EXPORT, START_TIMEOUT)
        yield up
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for reader in readers:
            reader.join(timeout=5)
        process.stdout.close()
        process.stderr.close()


def kubectl(
    kubeconfig: Path, *args: str, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    result = subprocess.run(
        [KUBECTL, *args], input=stdin, capture_output=True, text=True, env=env, timeout=60
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr}"
        )
    return result


def kubectl_json(kubeconfig: Path, *args: str) -> Any:
    return json.loads(kubectl(kubeconfig, *args, "-o", "json").stdout)


def wait_until(condition: Any, timeout: float, what: str, interval: float = 0.2) -> Any:
    """Call ``condition()`` until it returns something truthy; that value, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(interval)


def node_ready(kubeconfig: Path, name: str) -> bool:
    result = kubectl(
        kubeconfig,
        "get",
        "nodes",
        name,
        "-o",
        'jsonpath={.status.conditions[?(@.type=="Ready")].status}',
        check=False,
    )
    return result.returncode == 0 and result.stdout.strip() == "True"
