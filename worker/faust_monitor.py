"""Faust's main sensor, kept to what the worker reads of it.

Faust calls its `Monitor` four times for every message a stream takes (in, event in, event out,
out) and once per send: counters by topic and by stream, the read offset of each partition, three
clock reads and a deque of runtimes. Those statistics feed Faust's own web views, which the worker
does not serve (worker/web.py: /stats, /live, /ready, /metrics are the worker's own), and its
Prometheus metrics are its own (metrics/). What Faust itself reads back is `stream_inbound_time`:
the consumer's stall check (``verify_event_path``) warns when a partition with a lag has had no
event for ``stream_processing_timeout``. ``LeanMonitor`` keeps that and drops the rest, which a bare
Faust agent pays per message (docs/benchmarks.md).
"""
from __future__ import annotations

from time import monotonic
from typing import Any

from faust.sensors import Monitor


class LeanMonitor(Monitor):
    """`Monitor` whose per-message hooks only record when each partition's stream last took an
    event (what Faust's stall check reads); the rest of its statistics stay at zero."""

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        pass

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        self.stream_inbound_time[tp] = monotonic()

    def on_stream_event_out(self, tp: Any, offset: int, stream: Any, event: Any, state: Any = None) -> None:
        pass

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        pass

    def on_send_initiated(self, producer: Any, topic: str, message: Any, keysize: int, valsize: int) -> None:
        pass

    def on_send_completed(self, producer: Any, state: Any, metadata: Any) -> None:
        pass

    def on_table_get(self, table: Any, key: Any) -> None:
        pass

    def on_table_set(self, table: Any, key: Any, value: Any) -> None:
        pass

    def on_table_del(self, table: Any, key: Any) -> None:
        pass
