"""The fund agent's own work per request message, in process: ``Runtime.on_fund_request`` over a
cascade's liquidations (the streaming bench's cascade: 10 000 accounts liquidated at 15 500, in
messages of 640 items), with a stand-in table and a stand-in producer that only counts bytes. No
broker: what it measures is the agent's CPU (apply, fingerprint, encode, ledger records) and the
bytes it hands to the producer, which the broker then stores.

Usage: python bench/fund_agent_bench.py [--accounts N] [--repeat R] [--root DIR]
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


def main() -> None:
    from standins import bench_arguments
    parser = bench_arguments(10_000, HERE)
    parser.add_argument("--items", type=int, default=640, help="items per request message")
    args = parser.parse_args()
    sys.path.insert(0, str(args.root))
    import orjson

    from worker import app as app_module
    from worker.core.engine import Engine, fund_request
    from worker.core.outputs import Source
    from worker.core.params import load_params
    from worker.gc_tuning import tune_collector
    from worker.settings import resolve

    assert Path(app_module.__file__).is_relative_to(args.root.resolve()), app_module.__file__
    from standins import BatchProducer, Table, measured_seconds

    params = load_params(HERE / "bench" / "bench_params.toml")
    engine = Engine(params, remote_settlement=True)
    source = Source("positions", 0, 0, b"", b"")
    t0 = 1_700_000_000_000
    for i in range(args.accounts):  # as bench/stream_bench.py's crowd: liquidatable below ≈ 15 562
        account = f"c{i:06d}"
        engine.process_positions([
            {"type": "balance", "account_id": account, "asset": "USD", "collateral": "4500", "seq": 1, "ts": t0},
            {"type": "position", "account_id": account, "symbol": "BTC-PERP", "size": "1.000",
             "entry_price": "20000.0", "seq": 2, "ts": t0}], source)
    outputs = engine.process_mark({"symbol": "BTC-PERP", "mark_price": "15500.0", "ts": t0 + 100_000, "seq": 10},
                                  Source("mark-prices", 0, 1, b"", b""))
    items = [item for o in outputs if o.topic == "insurance-requests" for item in o.value["items"]]
    messages = [types.SimpleNamespace(partition=0, offset=k, key=b"USD",
                                      value=orjson.dumps(fund_request(items[s:s + args.items])))
                for k, s in enumerate(range(0, len(items), args.items))]
    tune_collector()
    print(f"code from {args.root}; {len(items):,} liquidation items in {len(messages)} request messages")
    per_item = []
    for _ in range(args.repeat):
        producer = BatchProducer(4)
        runtime = app_module.Runtime(resolve(environ={}), params, types.SimpleNamespace(producer=producer))
        runtime.fund_table = Table("fund-ledger")

        async def apply() -> None:
            for message in messages:
                await runtime.on_fund_request(message)
            await runtime.settle_fund_writes()  # (each message's writes are delivered in a task)

        seconds = measured_seconds(apply())
        per_item.append(1e6 * seconds / len(items))
        assert runtime.counters.get("internal_error:fund", 0) == 0
    ledger = producer.bytes.get("fund-ledger-changelog", 0)  # (built batches: records and their framing)
    print(f"fund agent, µs an item  {statistics.median(per_item):.2f}  (median of {args.repeat}: "
          f"{', '.join(f'{v:.2f}' for v in per_item)})")
    print(f"ledger bytes an item  {ledger / len(items):.0f}")
    print(f"output bytes an item  {(sum(producer.bytes.values()) - ledger) / len(items):.0f}")


if __name__ == "__main__":
    main()
