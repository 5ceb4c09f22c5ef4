"""TLS key pairs held as PEM bytes, and the context kube-apiserver reaches kubelets with.

:mod:`ssl` loads a certificate chain from files only, so a key pair held in memory (a
kubeconfig's ``client-key-data``, a certificate minted with trustme) is written for the
moment of the load to a private temporary directory (0700, files 0600) that is removed
right after, whatever happens: :func:`pem_files`, :func:`load_pem_cert_chain`.

:func:`kubelet_client_context` is the client side of the kubelet API as kube-apiserver
speaks it with ``--kubelet-client-certificate`` and no
``--kubelet-certificate-authority``: it presents the client certificate and does not
verify the kubelet's serving certificate. The sandbox's kubelet proxy and
``fleet.metricsapi`` (both reach the shards' kubelets in the apiserver's place) use it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import ssl
import tempfile
from collections.abc import Callable, Iterator

__all__ = ["kubelet_client_context", "load_pem_cert_chain", "pem_files"]

TEMP_PREFIX = "kubemock-fleet-"
"""Prefix of the short-lived private directory a key pair is written to for ssl to load."""


@contextlib.contextmanager
def pem_files(cert_pem: bytes, key_pem: bytes) -> Iterator[tuple[str, str]]:
    """Paths of ``cert_pem`` and ``key_pem`` written to a private temporary directory,
    deleted when the block ends."""
    tmp = tempfile.mkdtemp(prefix=TEMP_PREFIX)  # mkdtemp makes it 0700
    try:
        paths = []
        for name, data in (("client.crt", cert_pem), ("client.key", key_pem)):
            path = os.path.join(tmp, name)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            paths.append(path)
        yield paths[0], paths[1]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_pem_cert_chain(
    context: ssl.SSLContext,
    cert_pem: bytes,
    key_pem: bytes,
    *,
    password: Callable[[], str | bytes] | None = None,
) -> None:
    """``context.load_cert_chain`` from PEM bytes (see :func:`pem_files`); ssl's errors as
    it raises them."""
    with pem_files(cert_pem, key_pem) as (cert, key):
        context.load_cert_chain(cert, key, password=password)


def kubelet_client_context(cert_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
    """TLS to kubelets as kube-apiserver has it: this client certificate; the kubelets'
    serving certificates not verified (the shards' are their own, and kube-apiserver does
    not verify them either without ``--kubelet-certificate-authority``)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    load_pem_cert_chain(context, cert_pem, key_pem)
    return context
