"""Instruments: one file each; see base.py for the contract."""
