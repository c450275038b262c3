"""worker/faust_monitor.py: the worker's Faust app keeps, of Faust's main sensor, what Faust reads back."""
from __future__ import annotations

import time
from types import SimpleNamespace

from faust.sensors import Monitor
from faust.types import TP

from worker.app import create_app
from worker.faust_monitor import LeanMonitor
from worker.settings import resolve

TOPIC_PARTITION = TP("risk-positions", 2)


class Stand:
    """A stream or an event as the sensors see them (Faust's Monitor keeps weak references)."""

    def __init__(self, **fields) -> None:
        self.__dict__.update(fields)


def one_event(app) -> None:
    """A stream's calls for one message, in Faust's order (faust/streams.py), through the sensor
    delegate the streams hold."""
    message = SimpleNamespace(tp=TOPIC_PARTITION, offset=7, time_in=None)
    stream, event = Stand(task_owner=Stand()), Stand(message=message)
    app.sensors.on_message_in(TOPIC_PARTITION, 7, message)
    state = app.sensors.on_stream_event_in(TOPIC_PARTITION, 7, stream, event)
    app.sensors.on_stream_event_out(TOPIC_PARTITION, 7, stream, event, state)
    app.sensors.on_message_out(TOPIC_PARTITION, 7, message)


def test_the_worker_app_runs_the_lean_monitor_as_its_sensor():
    app, _ = create_app(resolve(environ={"RISK_BOOTSTRAP": "127.0.0.1:1"}))
    assert type(app.monitor) is LeanMonitor
    app.on_init_dependencies()  # (what a starting worker calls: the monitor joins the sensors)
    assert app.monitor in list(app.sensors)


def test_an_event_records_when_its_partition_last_streamed_and_counts_nothing():
    # Faust's stall check (its aiokafka driver's verify_event_path) reads stream_inbound_time[tp]:
    # it must stay current, or a partition with a lag would be reported idle since start
    app, _ = create_app(resolve(environ={"RISK_BOOTSTRAP": "127.0.0.1:1"}))
    app.on_init_dependencies()
    before = time.monotonic()
    one_event(app)
    monitor = app.monitor
    assert before <= monitor.stream_inbound_time[TOPIC_PARTITION] <= time.monotonic()
    assert (monitor.events_total, monitor.messages_received_total, monitor.messages_active) == (0, 0, 0)
    assert not monitor.events_runtime and not monitor.tp_read_offsets


def test_faust_s_own_monitor_counts_the_same_calls():
    # the control: the same four calls are what Faust's Monitor counts (so the lean one drops work)
    import faust

    app = faust.App("monitor-control", broker="kafka://127.0.0.1:1", Monitor=Monitor)
    app.on_init_dependencies()
    one_event(app)
    monitor = app.monitor
    assert type(monitor) is Monitor
    assert (monitor.events_total, monitor.messages_received_total, monitor.messages_active) == (1, 1, 0)
    assert TOPIC_PARTITION in monitor.stream_inbound_time and monitor.tp_read_offsets[TOPIC_PARTITION] == 7


def test_faust_s_stall_check_reads_the_inbound_times():
    # what LeanMonitor keeps is what Faust's pinned consumer driver reads (faust-streaming ~=0.15.3)
    import inspect

    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    source = inspect.getsource(AIOKafkaConsumerThread.verify_event_path)
    assert "monitor.stream_inbound_time" in source
