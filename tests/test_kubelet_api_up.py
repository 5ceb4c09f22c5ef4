"""``kubectl logs``, ``exec``, ``port-forward``, ``nodes/proxy`` and ``top`` on ``up``: sandbox proxy → shard kubelet API, every kubectl.

One ``up`` in a child process; the real kubectl binaries (1.27 … 1.33 and the default one)
read a pod's scripted log through the sandbox's ``pods/log`` proxy and the shard's HTTPS
kubelet API (client certificate from the sandbox's kubelet-client CA).
"""

from __future__ import annotations

import json
import os
import pty
import select
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path

import httpx
import pytest
import trustme

from fleet.kube import load_config
from tests._apiserver import real_binaries
from tests._up_process import kubectl, kubectl_json, node_ready, up_process, wait_until

pytestmark = pytest.mark.kubectl

VERSIONS = ["1.27", "1.28", "1.29", "1.30", "1.31", "1.32", "1.33"]
BINARIES = [f"/usr/lib/google-cloud-sdk/bin/kubectl.{v}" for v in VERSIONS] + ["/usr/bin/kubectl"]
POD = """
apiVersion: v1
kind: Pod
metadata:
  name: talker
  namespace: default
  annotations:
    fleet.mock.zhizuqiu.cn/logs: |
      one
      two
      three
    fleet.mock.zhizuqiu.cn/log-interval: 1s
    fleet.mock.zhizuqiu.cn/usage-cpu: 250m
    fleet.mock.zhizuqiu.cn/usage-memory: 50%
    fleet.mock.zhizuqiu.cn/port.7000: echo
    fleet.mock.zhizuqiu.cn/port.8081: '{"status": 418, "body": "teapot\\n"}'
spec:
  containers:
  - name: app
    image: busybox
    resources: {requests: {cpu: 100m, memory: 64Mi}}
"""
CRASHER = """
apiVersion: mock.zhizuqiu.cn/v1alpha1
kind: MockStatus
metadata:
  name: crasher
  namespace: default
spec:
  steps:
  - after: 0s
    phase: Running
    containers:
    - name: app
      restarts: {runFor: 3s}
---
apiVersion: v1
kind: Pod
metadata:
  name: crasher
  namespace: default
  annotations:
    zhizuqiu.github.com/mockStatus: crasher
    fleet.mock.zhizuqiu.cn/logs: |
      one
      two
      three
    fleet.mock.zhizuqiu.cn/log-interval: 1s
spec:
  containers:
  - name: app
    image: busybox
"""
"""A container that exits every 3 s and is restarted (runs [0, 3), [3, 6), a 10 s back-off,
[16, 19) ...), writing a line a second from its start: every finished run logged
``one two three one`` (lines at 0, 1, 2 and 3 s of the run)."""


def _run(
    binary: str, kubeconfig: Path, *args: str, timeout: float = 30, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    return subprocess.run(
        [binary, "--cache-dir", str(kubeconfig.parent / "cache"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
        input=stdin,
    )


PROMPT = b"# "
"""The exec'd shell's prompt on the terminal."""
TERMINAL_WITHIN = 10.0
"""Seconds a prompt may take to show (kubectl's start and the exec's upgrade on a busy box)."""


def _interactive(kubeconfig: Path, pod: str, lines: list[bytes]) -> tuple[int, bytes]:
    """``kubectl exec -it <pod> -- sh`` on a pseudo-terminal, typing ``lines``: (exit code,
    what the terminal showed up to the exit)."""
    fd, terminal = pty.openpty()
    child = subprocess.Popen(
        ["kubectl", "exec", "-it", pod, "--", "sh"],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        start_new_session=True,
    )
    os.close(terminal)
    shown = b""

    def read(seconds: float, until: bytes | None = None, count: int = 0) -> None:
        """What the terminal shows for ``seconds``, or until it has shown ``until``
        ``count`` times, or closed."""
        nonlocal shown
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if until is not None and shown.count(until) >= count:
                return
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                try:
                    shown += os.read(fd, 4096)
                except OSError:  # the terminal closed: kubectl is done
                    return

    for typed, line in enumerate(lines):
        read(TERMINAL_WITHIN, until=PROMPT, count=typed + 1)  # the shell waits for a line
        os.write(fd, line)
    read(3.0)  # until the shell exits and the terminal closes
    code = child.wait(timeout=10)
    os.close(fd)
    return code, shown.split(b"command terminated")[0]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


FALLBACK = "fallback to secondary dialer"
"""client-go's log line (-v=4) when its WebSocket port-forward is refused and SPDY is used."""


def _port_forward(
    binary: str, kubeconfig: Path, pod: str, *, log: list[str] | None = None
) -> list[str]:
    """Through ``kubectl port-forward``: GET on 8080 (default answer), on 8081 (scripted),
    and a line to 7000 (echo). ``log``: kubectl's -v=4 lines up to its listening go there."""
    http, teapot, echo = _free_port(), _free_port(), _free_port()
    verbose = ["-v=4"] if log is not None else []
    child = subprocess.Popen(
        [
            binary,
            *verbose,
            "port-forward",
            f"pod/{pod}",
            f"{http}:8080",
            f"{teapot}:8081",
            f"{echo}:7000",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
    )
    try:
        assert child.stdout is not None
        forwarding = 0
        while forwarding < 6:  # "Forwarding from 127.0.0.1:<port> -> <port>", IPv4 and IPv6
            line = child.stdout.readline()
            assert line, "kubectl port-forward ended"
            if "Forwarding from" in line:
                forwarding += 1
            elif log is not None:
                log.append(line)
            else:
                raise AssertionError(line)
        got = []
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/hello", timeout=10) as answer:
            got.append(answer.read().decode().strip())
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{teapot}/", timeout=10)
        except urllib.error.HTTPError as exc:
            got.append(f"{exc.code} {exc.read().decode().strip()}")
        with socket.create_connection(("127.0.0.1", echo), timeout=10) as sock:
            sock.sendall(b"ping")
            got.append(sock.recv(100).decode())
        return got
    finally:
        child.terminate()
        child.wait(timeout=10)
        if child.stdout is not None:
            child.stdout.close()


FOLLOW_LINES = 3
FOLLOW_WAIT = 20.0
"""Seconds ``kubectl logs -f`` may take to show :data:`FOLLOW_LINES` lines: kubectl's own
start (discovery, TLS) takes seconds on a loaded 2-core box; the pacing is checked apart."""


def _followed(binary: str, kubeconfig: Path, pod: str) -> list[float]:
    """When each of the first lines ``kubectl logs -f --tail 0`` showed arrived (monotonic
    seconds; the pod writes one a second), up to :data:`FOLLOW_LINES` within
    :data:`FOLLOW_WAIT`."""
    child = subprocess.Popen(
        [binary, "logs", "-f", pod, "--tail", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
    )
    arrived: list[float] = []
    done = threading.Event()

    def read() -> None:
        assert child.stdout is not None
        for _ in child.stdout:
            arrived.append(time.monotonic())
            if len(arrived) >= FOLLOW_LINES:
                break
        done.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        done.wait(FOLLOW_WAIT)
    finally:
        child.terminate()
        child.wait(timeout=10)
        reader.join(timeout=10)
        if child.stdout is not None:
            child.stdout.close()
    return arrived


def _stamped(answer: subprocess.CompletedProcess[str]) -> list[tuple[datetime, str]]:
    """``kubectl logs --timestamps`` lines: (when, text) each."""
    assert answer.returncode == 0, answer.stderr
    out = []
    for line in answer.stdout.splitlines():
        stamp, _, text = line.partition(" ")
        out.append((datetime.fromisoformat(stamp), text))
    return out


def _previous_after_a_restart(kubeconfig: Path, node: str | None = None) -> None:
    """``kubectl logs --previous`` (1.27 and 1.33) of a restarted container: its last run
    whole; without ``--previous``: the current (or, in the back-off, the last) run."""
    spec = CRASHER + (f"  nodeName: {node}\n" if node else "")
    kubectl(kubeconfig, "apply", "-f", "-", stdin=spec)

    def restarted() -> bool:
        count = kubectl(
            kubeconfig,
            "get",
            "pod",
            "crasher",
            "-o",
            "jsonpath={.status.containerStatuses[0].restartCount}",
            check=False,
        ).stdout
        return count.isdigit() and int(count) >= 1

    wait_until(restarted, 20, "crasher restarted")
    for binary in (BINARIES[0], BINARIES[-2]):
        previous = _stamped(
            _run(binary, kubeconfig, "logs", "crasher", "--previous", "--timestamps")
        )
        assert [text for _, text in previous] == ["one", "two", "three", "one"], binary
        current = _stamped(_run(binary, kubeconfig, "logs", "crasher", "--timestamps"))
        # The current run is read mid-way: its log has 1 to 4 lines so far, from its start
        # ("one"). Every run says the same words, so the run is told by its timestamps: the
        # current one starts when the previous one ended, with or after its last line (at
        # its exit: the same second), never before (a restart between the two reads only
        # makes it later). Fails when `logs` answers nothing, a log longer than one run's,
        # or the previous run's log for the current one (it starts 3 s before that line).
        assert 1 <= len(current) <= 4 and current[0][1] == "one", (binary, current)
        assert current[0][0] >= previous[-1][0], (binary, previous, current)
    kubectl(kubeconfig, "delete", "pod", "crasher", "--wait=false")


def _kubelet_port_refuses_strangers(kubeconfig: Path, node: str) -> None:
    """The shard's kubelet port, asked straight at the node's address and port: no
    credentials, a token nobody vouches for, and a client certificate of another CA are
    all refused (the apiserver's kubelet client certificate is what gets in)."""
    status = kubectl_json(kubeconfig, "get", "node", node)["status"]
    address = next(a["address"] for a in status["addresses"] if a["type"] == "InternalIP")
    url = f"https://{address}:{status['daemonEndpoints']['kubeletEndpoint']['Port']}"
    with httpx.Client(verify=False, timeout=10) as client:  # its serving cert is self-signed
        for path in ("/containerLogs/default/talker/app", f"/nodes/{node}/stats/summary", "/pods"):
            anonymous = client.get(url + path)
            assert (anonymous.status_code, anonymous.text) == (401, "Unauthorized\n"), path
            token = client.get(url + path, headers={"Authorization": "Bearer not-a-token"})
            assert token.status_code == 401, path
    stranger = ssl.create_default_context()
    stranger.check_hostname = False
    stranger.verify_mode = ssl.CERT_NONE
    ca = trustme.CA()
    ca.issue_cert("stranger.example", common_name="system:admin").configure_cert(stranger)
    with pytest.raises(httpx.TransportError), httpx.Client(verify=stranger) as client:
        client.get(url + "/pods").raise_for_status()


def test_logs_and_node_proxy_through_the_sandbox(tmp_path: Path) -> None:
    with up_process(tmp_path, "--nodes", "1") as up:
        kc = up.kubeconfig
        wait_until(lambda: node_ready(kc, "fleet-node-0"), 20, "node Ready")
        node = kubectl_json(kc, "get", "node", "fleet-node-0")
        addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
        assert addresses["InternalIP"] == "127.1.0.1"  # shard 0's first node address
        port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        assert port not in (0, 10250)  # the shard's own listener (a free port under up)
        annotations = node["metadata"]["annotations"]
        assert annotations["metrics.k8s.io/resource-metrics-path"] == (
            "/nodes/fleet-node-0/metrics/resource"
        )

        kubectl(kc, "apply", "-f", "-", stdin=POD)
        wait_until(
            lambda: (
                kubectl(kc, "get", "pod", "talker", "-o", "jsonpath={.status.phase}").stdout
                == "Running"
            ),
            20,
            "pod talker Running",
        )
        wait_until(  # one line a second since the pod's creation
            lambda: len(kubectl(kc, "logs", "talker").stdout.splitlines()) >= 2, 10, "2 lines"
        )
        for binary in BINARIES:
            assert Path(binary).exists(), f"{binary} is not installed"
            got = _run(binary, kc, "logs", "talker", "--tail", "2")
            assert got.returncode == 0, (binary, got.stderr)
            lines = got.stdout.splitlines()
            assert len(lines) == 2 and all(line in ("one", "two", "three") for line in lines)
            stamped = _run(binary, kc, "logs", "talker", "--tail", "1", "--timestamps")
            assert stamped.stdout.split(" ", 1)[0].endswith("000Z"), binary

        # follow: new lines arrive while the stream is open (one a second), until kubectl stops
        for binary in (BINARIES[0], BINARIES[-2]):
            arrived = _followed(binary, kc, "talker")
            assert len(arrived) == FOLLOW_LINES, (binary, arrived)
            # Fails if the lines were held back and sent together (span under 1 s: the pod
            # writes one a second) or the stream stalled between them (over 4 s).
            assert 1.0 <= arrived[-1] - arrived[0] <= 4.0, (binary, arrived)

        # the apiserver's own checks, with its messages
        bad = kubectl(kc, "logs", "talker", "-c", "nope", check=False)
        assert "container nope is not valid for pod talker" in bad.stderr
        prev = kubectl(kc, "logs", "talker", "--previous", check=False)
        assert 'previous terminated container "app" in pod "talker" not found' in prev.stderr
        _previous_after_a_restart(kc)
        _kubelet_port_refuses_strangers(kc, "fleet-node-0")

        # nodes/proxy reaches the node's kubelet paths
        pods = json.loads(
            kubectl(kc, "get", "--raw", "/api/v1/nodes/fleet-node-0/proxy/pods").stdout
        )
        assert "talker" in [p["metadata"]["name"] for p in pods["items"]]
        health = kubectl(kc, "get", "--raw", "/api/v1/nodes/fleet-node-0/proxy/healthz").stdout
        assert health == "ok"
        missing = kubectl(kc, "get", "--raw", "/api/v1/nodes/nope/proxy/pods", check=False)
        assert 'nodes "nope" not found' in missing.stderr

        # kubectl top: the sandbox's metrics.k8s.io, from the shard's /stats/summary
        for binary in (BINARIES[0], BINARIES[-2], BINARIES[-1]):
            top = _run(binary, kc, "top", "pod", "talker", "--no-headers")
            assert top.returncode == 0, (binary, top.stderr)
            assert top.stdout.split()[1:] == ["250m", "32Mi"], top.stdout
            nodes = _run(binary, kc, "top", "nodes", "--no-headers")
            assert nodes.returncode == 0, (binary, nodes.stderr)
            row = nodes.stdout.split()
            assert row[0] == "fleet-node-0" and row[1] == "350m", nodes.stdout  # base 100m + pod
        containers = kubectl(kc, "top", "pod", "talker", "--containers", "--no-headers").stdout
        assert containers.split()[1:] == ["app", "250m", "32Mi"]
        # label selectors on the lists, against the objects' labels
        picked = kubectl(kc, "top", "pod", "-l", "!nope", "--no-headers").stdout
        assert picked.split()[0] == "talker", picked
        none = kubectl(kc, "top", "pod", "-l", "app=web", "--no-headers", check=False)
        assert "talker" not in none.stdout, none.stdout
        labelled = kubectl(kc, "top", "node", "-l", "type=kubemock", "--no-headers").stdout
        assert labelled.split()[0] == "fleet-node-0", labelled
        raw = kubectl(
            kc, "get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes?labelSelector=type%3Dother"
        )
        assert json.loads(raw.stdout)["items"] == []
        bad = kubectl(
            kc,
            "get",
            "--raw",
            "/apis/metrics.k8s.io/v1beta1/pods?labelSelector=a%3D%3D%3D",
            check=False,
        )
        assert "unable to parse requirement" in bad.stderr or "BadRequest" in bad.stderr, bad.stderr

        # exec: SPDY/3.1 (kubectl <= 1.29), WebSocket (>= 1.30): output, exit codes, stdin
        for binary in BINARIES:
            hello = _run(binary, kc, "exec", "talker", "--", "echo", "hello", "world")
            assert (hello.returncode, hello.stdout) == (0, "hello world\n"), (binary, hello.stderr)
            failed = _run(binary, kc, "exec", "talker", "--", "sh", "-c", "exit 3")
            assert failed.returncode == 3, (binary, failed.stderr)
            assert "command terminated with exit code 3" in failed.stderr
        missing = kubectl(kc, "exec", "talker", "--", "nosuch", check=False)
        assert missing.returncode == 1
        assert 'exec: "nosuch": executable file not found in $PATH' in missing.stderr
        for binary in (BINARIES[0], BINARIES[-2], BINARIES[-1]):  # 1.27, 1.33, the default
            shell = _run(
                binary, kc, "exec", "-i", "talker", "--", "sh", stdin="echo hi\nhostname\nexit 4\n"
            )
            assert (shell.returncode, shell.stdout) == (4, "hi\ntalker\n"), (binary, shell.stderr)
        tty = _interactive(kc, "talker", [b"echo hi there\r", b"whoami\r", b"exit 2\r"])
        assert tty == (2, b"# echo hi there\r\nhi there\r\n# whoami\r\nroot\r\n# exit 2\r\n"), tty
        piped = _run(BINARIES[0], kc, "exec", "-i", "talker", "--", "cat", stdin="a\nb\n")
        assert (piped.returncode, piped.stdout) == (0, "a\nb\n"), piped.stderr  # SPDY stdin FIN

        # port-forward: SPDY (kubectl 1.27), SPDY tunnelled in a WebSocket (1.33), no fallback
        for binary in (BINARIES[0], BINARIES[-2]):
            log: list[str] = []
            assert _port_forward(binary, kc, "talker", log=log) == [
                "kubemock-fleet: default/talker port 8080: GET /hello",
                "418 teapot",
                "ping",
            ], binary
            assert not [line for line in log if FALLBACK in line], (binary, log)
        tunnelled = [line for line in log if "Before WebSocket Upgrade" in line]
        assert tunnelled, log  # 1.33 did try the WebSocket (and, above, was not refused)
        # the kubelet's own WebSocket port-forward, as the official Python client opens it
        assert _python_port_forward(kc, "talker") == (
            b"HTTP/1.1 200 OK",
            b"kubemock-fleet: default/talker port 8080: GET /py\n",
            b"pong",
        )
    assert not [line for line in up.stderr if "Traceback" in line], up.stderr


def _python_port_forward(kubeconfig: Path, pod: str) -> tuple[bytes, bytes, bytes]:
    """The official client's ``portforward`` (``v4.channel.k8s.io`` over WebSocket) on 8080
    and 7000: the status line and body of a GET, and an echo."""
    from kubernetes import client, config
    from kubernetes.stream import portforward

    api = client.CoreV1Api(config.new_client_from_config(str(kubeconfig)))
    forward = portforward(
        api.connect_get_namespaced_pod_portforward, pod, "default", ports="8080,7000"
    )
    try:
        http = forward.socket(8080)
        http.setblocking(True)
        http.settimeout(10)
        http.sendall(b"GET /py HTTP/1.1\r\nHost: pod\r\nConnection: close\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < int(
            answer.lower().partition(b"content-length: ")[2].split(b"\r\n")[0] or 0
        ):  # the connection stays until the WebSocket ends: read what Content-Length says
            chunk = http.recv(4096)
            assert chunk, answer
            answer += chunk
        echo = forward.socket(7000)
        echo.setblocking(True)
        echo.settimeout(10)
        echo.sendall(b"pong")
        pong = echo.recv(100)
        for port in (8080, 7000):
            assert forward.error(port) is None, forward.error(port)
    finally:
        forward.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0], body, pong


def _refused(context: object, port: int) -> bool:
    """Whether the metrics.k8s.io server turns away a client with ``context``'s certificate
    (its own serving certificate taken on trust)."""
    assert isinstance(context, ssl.SSLContext)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with httpx.Client(verify=context) as client:
            client.get(f"https://127.0.0.1:{port}/apis/metrics.k8s.io/v1beta1/nodes")
    except httpx.TransportError:
        return True
    return False


@pytest.mark.real
def test_logs_exec_port_forward_through_a_real_apiserver(tmp_path: Path) -> None:
    """``up --control-plane real``: kube-apiserver's own kubelet client (its certificate from
    the control plane's CA, which the shard trusts) reaches the shard at the node's InternalIP."""
    flags = ("--control-plane", "real", "--binaries", str(real_binaries()), "--nodes", "2")
    with up_process(tmp_path, *flags) as up:
        kc = up.kubeconfig
        for node in ("fleet-node-0", "fleet-node-1"):
            wait_until(lambda node=node: node_ready(kc, node), 15, f"{node} Ready")
        wait_until(  # kube-controller-manager's ServiceAccount controller: pods wait for it
            lambda: kubectl(kc, "get", "sa", "default", check=False).returncode == 0, 10, "SA"
        )
        kubectl(kc, "apply", "-f", "-", stdin=POD + "  nodeName: fleet-node-0\n")
        wait_until(
            lambda: (
                kubectl(kc, "get", "pod", "talker", "-o", "jsonpath={.status.phase}").stdout
                == "Running"
            ),
            15,
            "pod talker Running",
        )
        for binary in (BINARIES[0], BINARIES[-2]):  # kubectl 1.27 and 1.33
            logs = _run(binary, kc, "logs", "talker", "--tail", "1")
            assert logs.returncode == 0, (binary, logs.stderr)
            assert logs.stdout.splitlines()[0] in ("one", "two", "three"), (binary, logs.stdout)
            assert len(logs.stdout.splitlines()) == 1, (binary, logs.stdout)
            arrived = _followed(binary, kc, "talker")  # a line a second, as written
            assert len(arrived) == FOLLOW_LINES, (binary, arrived)
            # Fails if the lines were held back and sent together (span under 1 s: the pod
            # writes one a second) or the stream stalled between them (over 4 s).
            assert 1.0 <= arrived[-1] - arrived[0] <= 4.0, (binary, arrived)
        bad = kubectl(kc, "logs", "talker", "-c", "nope", check=False)
        assert "container nope is not valid for pod talker" in bad.stderr
        prev = kubectl(kc, "logs", "talker", "--previous", check=False)
        assert 'previous terminated container "app" in pod "talker" not found' in prev.stderr
        _previous_after_a_restart(kc, node="fleet-node-1")
        _kubelet_port_refuses_strangers(kc, "fleet-node-0")

        health = kubectl(kc, "get", "--raw", "/api/v1/nodes/fleet-node-0/proxy/healthz").stdout
        assert health == "ok"
        # Two nodes on one shard, each on its own address: the apiserver's unprefixed
        # nodes/<n>/proxy/stats/summary reaches the right one.
        for node in ("fleet-node-0", "fleet-node-1"):
            raw = kubectl(kc, "get", "--raw", f"/api/v1/nodes/{node}/proxy/stats/summary")
            assert json.loads(raw.stdout)["node"]["nodeName"] == node

        for binary in (BINARIES[0], BINARIES[-1]):  # SPDY, and WebSocket passed through
            hello = _run(binary, kc, "exec", "talker", "--", "echo", "hello")
            assert (hello.returncode, hello.stdout) == (0, "hello\n"), (binary, hello.stderr)
        for binary in (BINARIES[0], BINARIES[-2]):  # SPDY stdin (its FIN); WebSocket's close
            failed = _run(binary, kc, "exec", "talker", "--", "sh", "-c", "exit 3")
            assert failed.returncode == 3, (binary, failed.stderr)
            assert "command terminated with exit code 3" in failed.stderr, binary
            shell = _run(
                binary, kc, "exec", "-i", "talker", "--", "sh", stdin="echo hi\nhostname\nexit 4\n"
            )
            assert (shell.returncode, shell.stdout) == (4, "hi\ntalker\n"), (binary, shell.stderr)
            piped = _run(binary, kc, "exec", "-i", "talker", "--", "cat", stdin="a\nb\n")
            assert (piped.returncode, piped.stdout) == (0, "a\nb\n"), (binary, piped.stderr)

        for binary in (BINARIES[0], BINARIES[-2]):  # SPDY; SPDY in a WebSocket, passed through
            log: list[str] = []
            assert _port_forward(binary, kc, "talker", log=log) == [
                "kubemock-fleet: default/talker port 8080: GET /hello",
                "418 teapot",
                "ping",
            ], binary
            assert not [line for line in log if FALLBACK in line], (binary, log)
        assert _python_port_forward(kc, "talker")[1:] == (
            b"kubemock-fleet: default/talker port 8080: GET /py\n",
            b"pong",
        )

        # kubectl top: kube-apiserver 1.24 has no metrics.k8s.io; up registers an APIService
        # for its own aggregated server, which the aggregator reaches with its proxy
        # client certificate
        def top_ready() -> bool:
            return kubectl(kc, "top", "pod", "talker", "--no-headers", check=False).returncode == 0

        wait_until(top_ready, 30, "the APIService v1beta1.metrics.k8s.io Available")
        for binary in (BINARIES[0], BINARIES[-2], BINARIES[-1]):
            top = _run(binary, kc, "top", "pod", "talker", "--no-headers")
            assert top.stdout.split()[1:] == ["250m", "32Mi"], (binary, top.stdout, top.stderr)
            nodes = _run(binary, kc, "top", "nodes", "--no-headers")
            rows = {row.split()[0]: row.split()[1] for row in nodes.stdout.splitlines()}
            assert rows == {"fleet-node-0": "350m", "fleet-node-1": "100m"}, nodes  # base + pods
        picked = kubectl(kc, "top", "pod", "-l", "app=web", "--no-headers", check=False)
        assert "talker" not in picked.stdout, picked.stdout  # the selector reached the LIST
        apiservice = kubectl_json(kc, "get", "apiservice", "v1beta1.metrics.k8s.io")
        available = {c["type"]: c["status"] for c in apiservice["status"]["conditions"]}
        assert available["Available"] == "True", apiservice["status"]
        # only the aggregator's certificate gets in: the admin's (cluster CA) does not
        port = apiservice["spec"]["service"]["port"]
        assert _refused(load_config(kc).ssl_context, port)
        assert _refused(ssl.create_default_context(), port)  # no certificate at all
    assert not [line for line in up.stderr if "Traceback" in line], up.stderr
