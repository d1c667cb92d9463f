"""``make bench``: measurements of the real daemon in the network-namespace lab (they never assert)."""
