"""Baseline for the streaming benchmark: a bare Faust agent iterating raw bytes, counting."""
import os
import tempfile

import faust

app = faust.App(
    os.environ.get("BARE_APP_ID", "bare-faust"),
    broker=f"kafka://{os.environ['BARE_BOOTSTRAP']}",
    store="memory://",
    datadir=tempfile.mkdtemp(prefix="bare-faust-"),
    web_port=int(os.environ["BARE_WEB_PORT"]),
    web_host="127.0.0.1",
    web_bind="127.0.0.1",  # web_host is only the advertised name; Faust binds every interface by default
    broker_session_timeout=10, broker_heartbeat_interval=1, broker_rebalance_timeout=6,
    topic_partitions=4, topic_replication_factor=1, producer_linger_ms=20, producer_max_batch_size=262_144,
    consumer_auto_offset_reset="earliest",
)
topic = app.topic(os.environ["BARE_TOPIC"], key_type=bytes, value_type=bytes, key_serializer="raw",
                  value_serializer="raw")
count = {"messages": 0}


@app.agent(topic, concurrency=1)
async def bare(stream):
    async for _ in stream:
        count["messages"] += 1


@app.page("/stats")
async def stats(web, request):
    return web.json({"counters": {"messages:positions": count["messages"], "messages:mark-prices": 0},
                     "marks_ready": True, "owned_partitions": [0, 1, 2, 3]})


if __name__ == "__main__":
    faust.Worker(app, loglevel="warning", quiet=True).execute_from_commandline()
