"""The sandbox apiserver: a kubectl-compatible Kubernetes API in one process.

The embedded default backend of ``kubemock-fleet up`` and of the integration
tests (docs/sandbox.md lists what it implements). Public surface:

- :class:`SandboxSettings`: how it listens and what it keeps;
- :func:`serve_sandbox`: run it in a nursery; ``await nursery.start(serve_sandbox, settings)``
  returns a :class:`RunningSandbox` (url, token, kubeconfig path, ca_pem, app);
- :class:`SandboxApp`: the bare ASGI application, for other servers or in-process use.

It sits above ``fleet.kube`` (it writes its kubeconfig with it); nothing in
the library layers imports it.
"""

from fleet.sandbox._asgi import SandboxApp as SandboxApp
from fleet.sandbox._server import RunningSandbox as RunningSandbox
from fleet.sandbox._server import serve_sandbox as serve_sandbox
from fleet.sandbox._settings import SandboxSettings as SandboxSettings

__all__ = ["RunningSandbox", "SandboxApp", "SandboxSettings", "serve_sandbox"]
