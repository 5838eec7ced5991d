"""Watching the served app: the Grafana dashboard, its push to Grafana, ``andes top``."""
