"""A loss-sharing round's pay phase in process: the worker's own CPU per winner, without a broker.

One partition owner's work when the `allocate` broadcast arrives (worker/rounds.py): for each chunk
of ``PAY_CHUNK`` winners of its snapshot, ``pay_partition`` (the core's haircuts and events) and
``Runtime.publish_round_chunk`` (the chunk's record of the claims it paid written to the snapshots'
changelog, then the events sent; the accounts are written at the sweep, not measured here), through aiokafka's own record-batch builder (each batch built, checksum and all) and a
stand-in producer that completes every send at once. The same scenario as bench/rounds_bench.py:
N winning BTC shorts (1 BTC @ 20 000) in a haircut round at 15 000. What it leaves out is what the
worker bench adds: the broker, the network and the event loop's other tasks.

Usage: python bench/round_pay_bench.py [--accounts N] [--repeat R] [--root DIR]
  --root DIR   import the worker from another checkout (compiled in place there): a baseline, run
               alternately with this tree.
Its instructions, steadier than its time on a shared machine: bench/instructions.py.
"""
from __future__ import annotations

import statistics
import sys
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
PARTITIONS = 4


def main() -> None:
    from standins import bench_arguments  # (this script's folder)
    args = bench_arguments(100_000, HERE).parse_args()
    sys.path.insert(0, str(args.root))
    sys.path.insert(0, str(HERE / "bench"))
    from worker import app as app_module
    from worker.core.outputs import Source
    from worker.core.params import parse_params
    from worker.core.sharing import haircut_round_id, shared_amount
    try:
        from worker.core.sharing import round_memory_rows
    except ImportError:  # a baseline from before the pay chunks' records
        round_memory_rows = None
    from worker.gc_tuning import tune_collector
    from worker.rounds import RoundParticipant, partition_snapshot, pay_partition
    from worker.settings import resolve

    # (after the worker: rounds_bench puts this tree first on sys.path; what is imported stays the root's)
    from rounds_bench import bench_params
    from standins import BatchProducer, Table, measured_seconds
    assert Path(app_module.__file__).is_relative_to(args.root.resolve()), app_module.__file__

    params = parse_params(bench_params().encode())
    t0 = 1_700_000_000_000
    per_winner = []
    for _ in range(args.repeat):
        producer = BatchProducer(PARTITIONS)
        settings = resolve(environ={"RISK_PARTITIONS": str(PARTITIONS)})
        runtime = app_module.Runtime(settings, params, types.SimpleNamespace(producer=producer))
        runtime.accounts_table = Table("accounts")
        engine = runtime.engine
        source = Source("positions", 0, 0, b"", b"")
        engine.process_mark({"symbol": "BTC-PERP", "mark_price": "20000.0", "ts": t0, "seq": 1},
                            Source("mark-prices", 0, 0, b"", b""))
        for i in range(args.accounts):
            account = f"s{i:06d}"
            engine.process_positions([
                {"type": "balance", "account_id": account, "asset": "USD", "collateral": "5000", "seq": 1, "ts": t0},
                {"type": "position", "account_id": account, "symbol": "BTC-PERP", "size": "-1.000",
                 "entry_price": "20000.0", "seq": 2, "ts": t0}], source)
        engine.dirty.clear()
        message = {"type": "round", "round_id": haircut_round_id("BTC-PERP", "long", 0), "phase": "allocate",
                   "kind": "haircut", "symbol": "BTC-PERP", "loss_side": "long", "mark_seq": 3, "mark": 150_000,
                   "ts": t0 + 1_000, "partitions": PARTITIONS}
        snapshot = partition_snapshot(params, engine.accounts, message, runtime.partition_of)
        total = sum(int(row[-1]) for rows in snapshot.values() for row in rows)
        message.update(total=str(total), amount=str(shared_amount(total // 3, total)))  # a third of W shared
        tune_collector()

        runtime.snapshots_table = Table("round-snapshots")
        runtime.snapshots_table.data = {}  # (a memory store: a dict)
        records = hasattr(runtime, "write_paid")  # (a baseline from before: accounts written, publish_now)

        async def pay() -> None:
            chunk = RoundParticipant.PAY_CHUNK
            for p in sorted(snapshot):
                rows = snapshot[p]
                for start in range(0, len(rows), chunk):
                    if records:  # as RoundParticipant.act: the chunk's record, then its events
                        events, _, _ = pay_partition(params, engine.accounts, message, rows[start:start + chunk],
                                                     set())
                        paid = round_memory_rows(engine.accounts, message["round_id"], [a for a, _ in events])
                        await runtime.publish_round_chunk(message["round_id"], p, start // chunk, paid, events)
                    else:
                        events, _, _ = pay_partition(params, engine.accounts, message, rows[start:start + chunk],
                                                     engine.dirty)
                        await runtime.publish_now(events)

        per_winner.append(1e6 * measured_seconds(pay()) / args.accounts)
    print(f"code from {args.root}; {args.accounts:,} winners, {producer.records:,} records, "
          f"{sum(producer.bytes.values()) / 1e6:.1f} MB")
    print(f"pay, µs a winner  {min(per_winner):.2f}  (min of {args.repeat}; all: "
          f"{', '.join(f'{v:.2f}' for v in per_winner)}; median {statistics.median(per_winner):.2f})")


if __name__ == "__main__":
    main()
