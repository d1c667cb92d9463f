"""The Kubernetes adapter: Kube-OVN objects as a candidate source, and Kubernetes Events.

The official ``kubernetes`` client is imported in this package and nowhere else.
"""

from bgp_speaker.adapters.kube.client import load_configuration
from bgp_speaker.adapters.kube.events import EventRecorder
from bgp_speaker.adapters.kube.source import KubeSource, gateway_name
from bgp_speaker.adapters.kube.watching import Timing

__all__ = ["EventRecorder", "KubeSource", "Timing", "gateway_name", "load_configuration"]
