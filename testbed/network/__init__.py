"""Network: a topology graph brought up as namespaces (Mininet nodes), links and qdiscs."""
