"""``metrics.k8s.io`` as an aggregated API server beside a real kube-apiserver.

Layer 3, beside ``fleet.realcp`` and ``fleet.sandbox``: it uses ``fleet.kube`` (the
apiserver, and the kubelets' Summary API made into metrics objects, shared with the
sandbox); ``fleet.up`` runs it on ``up --control-plane real`` so ``kubectl top`` works with
no metrics-server. Public surface:

- :class:`MetricsApiSettings`: the request-header CA and a kubelet client certificate;
- :func:`serve_metrics_api`: ``await nursery.start(serve_metrics_api, api, settings)``
  serves, registers the Service and APIService, and reports a :class:`RunningMetricsApi`.
"""

from fleet.metricsapi._serve import MetricsApiSettings as MetricsApiSettings
from fleet.metricsapi._serve import RunningMetricsApi as RunningMetricsApi
from fleet.metricsapi._serve import serve_metrics_api as serve_metrics_api

__all__ = ["MetricsApiSettings", "RunningMetricsApi", "serve_metrics_api"]
