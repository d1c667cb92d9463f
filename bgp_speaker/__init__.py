"""bgp-speaker: announce Kube-OVN VPC NAT gateway EIPs to core routers over BGP."""

__version__ = "0.1.0"
