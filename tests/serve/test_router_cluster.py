"""The QoE-headroom router inside a running app on a real local Ray cluster.

Scenario: one engine replica holds 12 open streams; the deployment scales out to 3 replicas
(a config deploy that changes only ``num_replicas`` keeps the loaded replica); after the new
replicas' first routing reports reach the gateway's handle, a burst of 12 streams arrives at
once. The router must prefer the two empty replicas (headroom) and spread the burst between
them (it counts what it sent since each report) instead of herding onto one. Each replica's
load is read from its own routing report (``record_routing_stats`` on its Serve actor). Takes
about 30 s on 2 cores.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from andes.config import ServeConfig, load_config
from serve_cluster import OpenStreams, local_serve, replica_loads, wait_until

pytestmark = pytest.mark.ray

CONFIG_FILE = Path(__file__).resolve().parents[2] / "deployments" / "andes.yaml"
OPEN_TOKENS = 4000  # streams that outlive the test unless closed (about 25 ms per token; context 4096)


def deploy(client, num_replicas: int) -> None:
    config = yaml.safe_load(CONFIG_FILE.read_text())
    (app,) = config["applications"]
    assert load_config(ServeConfig, app["args"]).router.name == "headroom"  # the shipped default
    engine = next(d for d in app["deployments"] if d["name"] == "EngineReplica")
    engine["num_replicas"] = num_replicas
    client.deploy_apps(ServeDeploySchema.model_validate(config), _blocking=True)


def open_streams(base_url: str) -> OpenStreams:
    return OpenStreams(base_url, {"model": "andes-sim", "prompt": "a long story", "max_tokens": OPEN_TOKENS,
                                  "stream": True, "ttft": 1.0, "tds": 4.8})


@pytest.fixture(scope="module")
def cluster():
    with local_serve() as (client, port):
        deploy(client, 1)
        yield client, f"http://127.0.0.1:{port}"


def test_scale_out_burst_goes_to_the_replicas_with_headroom_and_spreads(cluster):
    client, base_url = cluster
    streams = open_streams(base_url)
    try:
        streams.open(12)
        (loaded,) = wait_until(lambda: [r for r, n in replica_loads().items() if n == 12], 30,
                               "12 streams on the single replica")
        deploy(client, 3)
        wait_until(lambda: len(replica_loads()) == 3, 60, "3 reporting replicas")
        time.sleep(6.0)  # several report periods: every replica's report reaches the gateway's handle
        streams.open(12)
        def all_open():
            loads = replica_loads()
            return loads if sum(loads.values()) == 24 else None

        loads = wait_until(all_open, 30, "24 open streams")
        new = [n for r, n in loads.items() if r != loaded]
        assert loads[loaded] <= 13, loads  # at most one of the burst to the busy replica
        assert min(new) >= 3 and sum(new) >= 11, loads  # the burst spreads over both new ones
    finally:
        streams.close()
    # Disconnected clients abort their engine requests on every replica.
    wait_until(lambda: sum(replica_loads().values()) == 0, 90, "aborts after disconnect")
