"""kubemock-fleet: thousands of fake kubelets per process for scale-testing control planes."""

__version__ = "0.1.0"
