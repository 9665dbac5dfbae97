"""Offline training and evaluation (driven by ``moe-perception train`` / ``evaluate``)."""
