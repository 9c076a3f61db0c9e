"""Topology: validated specs → a graph with interfaces, addresses and routes (pure)."""
