"""The positions agent's own work per single-event message, in process: ``Runtime.on_positions_message``
over the streaming bench's single-event phase (healthy position updates of 10 000 accounts, one
event a message), metrics installed, and the deferred account writes the commit's flush makes
(``persist_dirty`` every ``--flush-every`` messages: Faust commits every 2.8 s, ~30 000 messages
here), with a stand-in table and producer. No broker and no Faust: what it measures is what our
handler adds to Faust's own per-message path (bench/stream_bench.py measures the two together,
beside a bare Faust agent).

Usage: python bench/single_event_bench.py [--accounts N] [--messages M] [--repeat R] [--group G] [--root DIR]
  --group G    the messages in groups of G (``on_positions_messages``), as the worker takes them
  --root DIR   import the worker from another checkout (compiled in place there), to measure a
               baseline beside this tree; run both alternately.
Its instructions, steadier than its time on a shared machine: bench/instructions.py.
"""
from __future__ import annotations

import statistics
import sys
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
T0 = 1_700_000_000_000


def main() -> None:
    from standins import bench_arguments
    parser = bench_arguments(10_000, HERE)
    parser.add_argument("--messages", type=int, default=30_000)
    parser.add_argument("--flush-every", type=int, default=30_000, help="messages between the commit's flushes")
    parser.add_argument("--group", type=int, default=0,
                        help="messages handed to on_positions_messages together (0: on_positions_message, one "
                             "at a time; the worker's RISK_POSITIONS_GROUP_MS)")
    args = parser.parse_args()
    sys.path.insert(0, str(args.root))
    import orjson
    from prometheus_client import CollectorRegistry

    from metrics import WorkerMetrics
    from worker import app as app_module
    from worker.core.outputs import Source
    from worker.core.params import load_params
    from worker.gc_tuning import tune_collector
    from worker.settings import resolve

    assert Path(app_module.__file__).is_relative_to(args.root.resolve()), app_module.__file__
    from standins import BatchProducer, Table, measured_seconds

    params = load_params(HERE / "bench" / "bench_params.toml")
    accounts = [f"a{i:06d}" for i in range(args.accounts)]
    # as bench/stream_bench.py: 5 000 USD and 1.000 BTC each, a mark at 20 000, then single updates
    setup = [[{"type": "balance", "account_id": a, "asset": "USD", "collateral": "5000", "seq": 1, "ts": T0},
              {"type": "position", "account_id": a, "symbol": "BTC-PERP", "size": "1.000",
               "entry_price": "20000.0", "seq": 2, "ts": T0}] for a in accounts]
    messages = []
    for k in range(args.messages):
        account = accounts[k % args.accounts]
        event = {"type": "position", "account_id": account, "symbol": "BTC-PERP",
                 "size": f"{(900 + k % 200) / 1000:.3f}", "entry_price": "20000.0",
                 "seq": 3 + k // args.accounts, "ts": T0 + 1}
        messages.append(types.SimpleNamespace(partition=0, offset=k, key=account.encode(), value=orjson.dumps(event)))
    tune_collector()
    print(f"code from {args.root}; {len(messages):,} single-event messages over {args.accounts:,} accounts")
    per_message = []
    for _ in range(args.repeat):
        producer = BatchProducer(1)  # one partition: every account is this worker's
        settings = resolve(environ={"RISK_PARTITIONS": "1"})
        runtime = app_module.Runtime(settings, params, types.SimpleNamespace(producer=producer))
        runtime.accounts_table = Table("accounts")
        runtime.metrics = WorkerMetrics(CollectorRegistry())
        source = Source("positions", 0, 0, b"", b"")
        for events in setup:
            runtime.engine.process_positions(events, source)
        runtime.engine.process_mark({"symbol": "BTC-PERP", "mark_price": "20000.0", "ts": T0, "seq": 1},
                                    Source("mark-prices", 0, 0, b"", b""))
        runtime.engine.dirty.clear()
        for account in accounts:  # as the worker's setup messages leave it: every account's partition known
            assert runtime._partition_of.holds(account, 0)

        async def apply() -> None:
            if not args.group:
                for k, message in enumerate(messages, 1):
                    await runtime.on_positions_message(message)
                    if k % args.flush_every == 0:
                        await runtime.persist_dirty()
                return
            for start in range(0, len(messages), args.group):
                await runtime.on_positions_messages(messages[start:start + args.group])
                if (start + args.group) // args.flush_every > start // args.flush_every:
                    await runtime.persist_dirty()

        per_message.append(1e6 * measured_seconds(apply()) / len(messages))
        assert runtime.counters.get("messages:positions") == len(messages), runtime.counters
        assert not any(k.startswith(("dead_letter", "internal_error")) for k in runtime.counters), runtime.counters
    print(f"positions agent, µs a message  {statistics.median(per_message):.2f}  (median of {args.repeat}: "
          f"{', '.join(f'{v:.2f}' for v in per_message)})")
    print(f"account records written  {producer.records:,}")


if __name__ == "__main__":
    main()
