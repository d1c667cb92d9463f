"""A Kubernetes API server double (real HTTP) and Kube-OVN-shaped objects, for tests and the demo."""

from tests.kubeapi.server import ApiServer
from tests.kubeapi.store import ApiError, ResourceType

__all__ = ["ApiError", "ApiServer", "ResourceType"]
