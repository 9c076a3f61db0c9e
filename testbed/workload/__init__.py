"""Workload: what the hosts do during a point (iperf3 flows, incast, commands, events)."""
