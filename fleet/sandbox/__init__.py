"""The sandbox apiserver: a kubectl-compatible Kubernetes API in one process.

The embedded default backend of ``kubemock-fleet up`` and of the integration
tests (docs/sandbox.md lists what it implements). Public surface:

- :class:`SandboxSettings`: how it listens and what it keeps;
- :func:`serve_sandbox`: run it in a nursery; ``await nursery.start(serve_sandbox, settings)``
  returns a :class:`RunningSandbox` (url, token, kubeconfig path, ca_pem, app);
- :class:`SandboxApp`: the bare ASGI application, for other servers or in-process use;
- :class:`StatusError`: an error answer (HTTP code and ``Status`` body), what a handler
  raises; :func:`too_many_requests` and :func:`gone` build the 429 and 410 an in-process
  fault injector (``bench.Storm``, put in with :meth:`SandboxApp.wrap_handler`) raises to
  answer in the apiserver's words; :data:`Handler` is what ``wrap_handler`` wraps.

For the sandbox micro-benchmark (``bench.sandbox``), which measures the
parts on their own: :class:`Http1Server` with :func:`open_listeners` and
:func:`url_of` (the lean HTTP/1.1 front), :func:`tls_files` (the throwaway CA
and certificate), and :class:`Call` (one API request, served without HTTP).
For the tests that check the OpenAPI v2 protobuf against kube-apiserver's own:
:func:`encode_openapi_v2`.

It sits above ``fleet.kube`` (it writes its kubeconfig with it); nothing in
the library layers imports it.
"""

from fleet.sandbox._api import Call as Call
from fleet.sandbox._asgi import Handler as Handler
from fleet.sandbox._asgi import SandboxApp as SandboxApp
from fleet.sandbox._http1 import Http1Server as Http1Server
from fleet.sandbox._http1 import open_listeners as open_listeners
from fleet.sandbox._http1 import url_of as url_of
from fleet.sandbox._openapi_proto import encode_document as encode_openapi_v2
from fleet.sandbox._server import IDENTITY_SUFFIX as IDENTITY_SUFFIX
from fleet.sandbox._server import RunningSandbox as RunningSandbox
from fleet.sandbox._server import identity_dir as identity_dir
from fleet.sandbox._server import serve_sandbox as serve_sandbox
from fleet.sandbox._server import tls_files as tls_files
from fleet.sandbox._settings import SandboxSettings as SandboxSettings
from fleet.sandbox._status import StatusError as StatusError
from fleet.sandbox._status import gone as gone
from fleet.sandbox._status import too_many_requests as too_many_requests

__all__ = [
    "IDENTITY_SUFFIX",
    "Call",
    "Handler",
    "Http1Server",
    "RunningSandbox",
    "SandboxApp",
    "SandboxSettings",
    "StatusError",
    "encode_openapi_v2",
    "gone",
    "identity_dir",
    "open_listeners",
    "serve_sandbox",
    "tls_files",
    "too_many_requests",
    "url_of",
]
