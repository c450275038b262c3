"""Real-broker tier (embedded Tansu): the HTTP surface of a worker process (README, "Security and endpoints").

Nothing is mocked: an embedded Kafka-protocol broker, a worker started with `python -m worker worker`,
its listening sockets read from /proc, and plain HTTP requests.
"""
from __future__ import annotations

import asyncio

import orjson
import pytest

from tests.fixtures import EXAMPLES, balance, mark, position
from tests.netstat import listening_addresses
from worker.harness import WorkerGroup, produce, wait_for
from worker.web import fetch

pytestmark = pytest.mark.broker




FAUST_VIEWS = ["/", "/table/", "/table/accounts/", "/table/accounts/a/", "/router/", "/router/topics/",
               "/router/accounts/a/", "/graph/", "/stats/", "/assignment/", "/performance/"]


def test_web_surface_of_a_worker(broker, prefix, tmp_path):
    """Default settings plus a token: the HTTP port listens on 127.0.0.1 only, serves the product's
    endpoints behind the token (/live excepted), and none of Faust's views, even for an account it holds."""
    token = "broker-tier-token-0123456789"
    records = [(prefix + "mark-prices", b"BTC-PERP", orjson.dumps(mark("BTC-PERP", "20000.0", 1, 1))),
               (prefix + "positions", b"a", orjson.dumps([balance("a", "1000", 1, 2),
                                                          position("a", "BTC-PERP", "1.000", "20000.0", 2, 2)]))]
    with WorkerGroup(broker.bootstrap, EXAMPLES / "params.toml", app_id=prefix + "w", prefix=prefix,
                     log_dir=tmp_path, token=token) as group:
        group.start(1)
        asyncio.run(group.wait_ready())
        asyncio.run(produce(broker.bootstrap, records))
        asyncio.run(wait_for(lambda: (group.stats()[0] or {}).get("accounts") == 1, 60, "account a held"))
        port = group.ports[0]
        bound = listening_addresses(group.procs[0].pid, port)
        url = f"http://127.0.0.1:{port}"
        live = fetch(url + "/live")
        ready = fetch(url + "/ready", token)
        refused = {path: fetch(url + path)[0] for path in ["/ready", "/stats", "/metrics", "/table/accounts/a/"]}
        wrong = fetch(url + "/stats", token[:-1] + "x")[0]
        served = {path: fetch(url + path, token)[0] for path in ["/stats", "/metrics"]}
        views = {path: fetch(url + path, token)[0] for path in FAUST_VIEWS}
        assert group.recovery_errors() == []
    assert bound == {"127.0.0.1"}  # RISK_WEB_BIND's default, not every interface
    assert live == (200, {"live": True})
    assert ready[0] == 200 and ready[1]["ready"] is True, ready
    assert ready[1]["marks_caught_up"] and ready[1]["partitions_assigned"] and ready[1]["mark_reader_progressing"]
    assert refused == {path: 401 for path in refused} and wrong == 401
    assert served == {"/stats": 200, "/metrics": 200}
    assert views == {path: 404 for path in FAUST_VIEWS}
