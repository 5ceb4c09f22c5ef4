"""The Kubernetes client of kubemock-fleet: the bottom layer every component stands on.

- Credentials: :func:`load_config` (kubeconfig as kubectl reads it, or in-cluster)
  gives a :class:`ClusterConfig` (server, TLS contexts for HTTP/1.1 and HTTP/2, :class:`Auth`).
- The transport seam: :class:`Requester` (``request``, ``stream``,
  ``request_batch`` of :class:`BatchRequest` s), every implementation derived
  from :class:`BaseRequester` (whose ``request_batch`` sends one by one):
  :class:`Client` (httpx, general use) and :class:`HotTransport` (hand-framed
  persistent HTTP/1.1 for Lease renewals, status PATCHes and watches; its
  ``request_batch`` pipelines up to :data:`MAX_PIPELINE` on one connection),
  :class:`Http2Connection` (ONE HTTP/2 connection carrying many requests and
  watches as streams, as a kubelet's client does; :class:`Http2Settings`), and
  for unit tests :class:`FakeApiserver` (scripted answers) and
  :class:`MemoryApiserver` (a stateful in-memory store, with
  :class:`MemoryClient` connections to cut). :class:`InstrumentedRequester`
  wraps any of them and reports each request (verb, resource, code, latency)
  to a :class:`RequestRecorder`.
- The verbs, once, over any requester: :class:`Rest` (``get``, ``list`` with
  paging into a :class:`ListResult`, ``create``, ``replace``, ``patch`` of any
  :data:`PatchType`, ``merge_patch``, ``delete`` and ``delete_collection`` with
  DeleteOptions), errors raised as :mod:`fleet.errors` maps them.
  :class:`Client` is a :class:`Rest` over httpx.
- ``metrics.k8s.io`` from kubelets (``_resourcemetrics``, for the sandbox and
  ``fleet.metricsapi``): :func:`fetch_summaries`, :func:`node_metrics`,
  :func:`pod_metrics`, :func:`metrics_list`, :data:`METRICS_GROUP`, :data:`METRICS_VERSION`;
  the TLS those fetches need (``_tls``): :func:`kubelet_client_context` (a client
  certificate, the kubelet's not verified, as kube-apiserver) and
  :func:`load_pem_cert_chain` (a key pair from PEM bytes, via a private temp dir).
- On top of the seam: :class:`Reflector` (list + watch with the client-go
  contract) and :class:`WriteQueue` (coalesced, rate-limited, retried writes).
- client-go's event correlator, the parts every recorder shares (``_correlator``):
  :class:`EventAggregator` (alike events combined, :data:`COMBINED`) and
  :class:`SpamFilter` (a token bucket per source and object), with client-go's limits.

Errors are those of :mod:`fleet.errors`.
"""

from fleet.kube._auth import BasicAuth as BasicAuth
from fleet.kube._auth import ExecCredentialPlugin as ExecCredentialPlugin
from fleet.kube._auth import StaticToken as StaticToken
from fleet.kube._auth import TokenFile as TokenFile
from fleet.kube._backoff import Backoff as Backoff
from fleet.kube._backoff import BackoffPolicy as BackoffPolicy
from fleet.kube._client import Client as Client
from fleet.kube._client import ClientTimeouts as ClientTimeouts
from fleet.kube._cluster import Auth as Auth
from fleet.kube._cluster import ClusterConfig as ClusterConfig
from fleet.kube._cluster import NoAuth as NoAuth
from fleet.kube._config import in_cluster_config as in_cluster_config
from fleet.kube._config import load_config as load_config
from fleet.kube._config import write_kubeconfig as write_kubeconfig
from fleet.kube._correlator import AGGREGATE_MAX as AGGREGATE_MAX
from fleet.kube._correlator import AGGREGATE_WINDOW as AGGREGATE_WINDOW
from fleet.kube._correlator import COMBINED as COMBINED
from fleet.kube._correlator import CORRELATOR_CACHE as CORRELATOR_CACHE
from fleet.kube._correlator import SPAM_BURST as SPAM_BURST
from fleet.kube._correlator import SPAM_REFILL as SPAM_REFILL
from fleet.kube._correlator import EventAggregator as EventAggregator
from fleet.kube._correlator import SpamFilter as SpamFilter
from fleet.kube._fake import FakeApiserver as FakeApiserver
from fleet.kube._fake import FakeRequest as FakeRequest
from fleet.kube._fake import StreamScript as StreamScript
from fleet.kube._fake import json_response as json_response
from fleet.kube._fake import status_response as status_response
from fleet.kube._http2 import Http2Connection as Http2Connection
from fleet.kube._http2 import Http2Settings as Http2Settings
from fleet.kube._instrumented import InstrumentedRequester as InstrumentedRequester
from fleet.kube._instrumented import RequestRecorder as RequestRecorder
from fleet.kube._memapi import MemoryApiserver as MemoryApiserver
from fleet.kube._memapi import MemoryClient as MemoryClient
from fleet.kube._paths import resource_path as resource_path
from fleet.kube._ratelimit import TokenBucket as TokenBucket
from fleet.kube._resourcemetrics import METRICS_GROUP as METRICS_GROUP
from fleet.kube._resourcemetrics import METRICS_VERSION as METRICS_VERSION
from fleet.kube._resourcemetrics import fetch_summaries as fetch_summaries
from fleet.kube._resourcemetrics import metrics_list as metrics_list
from fleet.kube._resourcemetrics import node_metrics as node_metrics
from fleet.kube._resourcemetrics import pod_metrics as pod_metrics
from fleet.kube._rest import ListResult as ListResult
from fleet.kube._rest import PatchType as PatchType
from fleet.kube._rest import Rest as Rest
from fleet.kube._seam import BaseRequester as BaseRequester
from fleet.kube._seam import BatchRequest as BatchRequest
from fleet.kube._seam import Requester as Requester
from fleet.kube._seam import Response as Response
from fleet.kube._seam import StreamResponse as StreamResponse
from fleet.kube._seam import error_for as error_for
from fleet.kube._tls import kubelet_client_context as kubelet_client_context
from fleet.kube._tls import load_pem_cert_chain as load_pem_cert_chain
from fleet.kube._transport import MAX_PIPELINE as MAX_PIPELINE
from fleet.kube._transport import HotTransport as HotTransport
from fleet.kube._transport import HotTransportSettings as HotTransportSettings
from fleet.kube._views import ListMeta as ListMeta
from fleet.kube._views import MetaOnly as MetaOnly
from fleet.kube._views import ObjectMeta as ObjectMeta
from fleet.kube._views import OwnerReference as OwnerReference
from fleet.kube._views import View as View
from fleet.kube._views import decoder_for as decoder_for
from fleet.kube._views import object_key as object_key
from fleet.kube._watching import Reflector as Reflector
from fleet.kube._watching import WatchEvent as WatchEvent
from fleet.kube._watching import WatchSettings as WatchSettings
from fleet.kube._writequeue import Write as Write
from fleet.kube._writequeue import WriteQueue as WriteQueue
from fleet.kube._writequeue import WriteQueueSettings as WriteQueueSettings
from fleet.kube._writequeue import WriteResult as WriteResult

__all__ = [
    "AGGREGATE_MAX",
    "AGGREGATE_WINDOW",
    "COMBINED",
    "CORRELATOR_CACHE",
    "MAX_PIPELINE",
    "METRICS_GROUP",
    "METRICS_VERSION",
    "SPAM_BURST",
    "SPAM_REFILL",
    "Auth",
    "Backoff",
    "BackoffPolicy",
    "BaseRequester",
    "BasicAuth",
    "BatchRequest",
    "Client",
    "ClientTimeouts",
    "ClusterConfig",
    "EventAggregator",
    "ExecCredentialPlugin",
    "FakeApiserver",
    "FakeRequest",
    "HotTransport",
    "HotTransportSettings",
    "Http2Connection",
    "Http2Settings",
    "InstrumentedRequester",
    "ListMeta",
    "ListResult",
    "MemoryApiserver",
    "MemoryClient",
    "MetaOnly",
    "NoAuth",
    "ObjectMeta",
    "OwnerReference",
    "PatchType",
    "Reflector",
    "RequestRecorder",
    "Requester",
    "Response",
    "Rest",
    "SpamFilter",
    "StaticToken",
    "StreamResponse",
    "StreamScript",
    "TokenBucket",
    "TokenFile",
    "View",
    "WatchEvent",
    "WatchSettings",
    "Write",
    "WriteQueue",
    "WriteQueueSettings",
    "WriteResult",
    "decoder_for",
    "error_for",
    "fetch_summaries",
    "in_cluster_config",
    "json_response",
    "kubelet_client_context",
    "load_config",
    "load_pem_cert_chain",
    "metrics_list",
    "node_metrics",
    "object_key",
    "pod_metrics",
    "resource_path",
    "status_response",
    "write_kubeconfig",
]
