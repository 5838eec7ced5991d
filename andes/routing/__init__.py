"""Cluster routing: send each new request where it adds the most QoE.

Pure: NumPy only, no clocks, no I/O, no Ray. Three parts, one module each:
- ``stats``: the report a replica sends about once a second (``ReplicaStats``) and what a router
  needs of a new request (``RoutedRequest``);
- ``headroom``: the scoring model, a pure projection of QoE from the reports;
- ``routers``: ``Router`` (highest headroom) and the baselines, which turn the latest reports
  into a choice; their contract is in that module's docstring.
"""

from andes.routing.headroom import HeadroomConfig, headroom, headrooms
from andes.routing.routers import PowerOfTwoRouter, RoundRobinRouter, Router
from andes.routing.stats import MAX_ENTRIES, ReplicaStats, RoutedRequest

__all__ = [
    "MAX_ENTRIES",
    "HeadroomConfig",
    "PowerOfTwoRouter",
    "ReplicaStats",
    "RoundRobinRouter",
    "RoutedRequest",
    "Router",
    "headroom",
    "headrooms",
]
