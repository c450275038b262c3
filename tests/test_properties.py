"""Hypothesis properties over random accounts, prices and parameters (SPEC §2, §4, §5)."""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis import event as label

from tests.fixtures import Driver, balance, make_params, position
from worker.core.fixed import PPM, parse_decimal
from worker.core.liquidation import execution_price, plan_liquidation
from worker.core.margin import Leg, margin_state
from worker.replay import format_output

T = 1_700_000_000_000
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def parameter_sets(draw, sharing=False):
    mode = draw(st.sampled_from(["partial", "full"]))
    slippage = draw(st.integers(0, 1500))
    low = draw(st.integers(0, 1500))
    high = draw(st.integers(low, 2000))
    model = draw(st.sampled_from(["flat", "severity"]))
    liquidator = draw(st.integers(0, PPM))
    protocol = draw(st.integers(0, PPM - liquidator))
    initial = draw(st.integers(0, 5_000))
    floor = draw(st.integers(0, initial + 500))  # a fund may start below its floor (SPEC §5)
    extra = ""
    if sharing:
        repay = draw(st.sampled_from(["", str(floor), str(floor + draw(st.integers(0, 300)))]))
        extra = (f'[loss_sharing]\nmode = "haircut"\nrepay_above = "{repay}"\n'
                 f"round_interval_ms = {draw(st.sampled_from([0, 300, 1000]))}")
    return make_params(
        mode=mode, buffer_ppm=draw(st.integers(0, 50_000)), liquidator_ppm=liquidator, protocol_ppm=protocol,
        initial_balance=str(initial), floor=str(floor), extra=extra,
        btc_brackets='[{max_notional = "50000", mmr_ppm = 4000}, {max_notional = "250000", mmr_ppm = 5000}, {mmr_ppm = 10000}]',
        btc_penalty=f'{{model = "{model}", min_ppm = {low}, max_ppm = {high}}}', btc_slippage_ppm=slippage,
        btc_min_notional=str(draw(st.integers(0, 500))),
        eth_penalty=f'{{model = "flat", min_ppm = {low}}}', eth_slippage_ppm=draw(st.integers(0, 2000)),
        eth_brackets='[{max_notional = "25000", mmr_ppm = 5000}, {mmr_ppm = 10000}]',
        pending_timeout_ms=draw(st.sampled_from([0, 1_000])),
    )


@st.composite
def scopes(draw, params):
    """A scope with 1–2 positions, its collateral and marks, as Legs."""
    legs = []
    for symbol in draw(st.sampled_from([["BTC-PERP"], ["ETH-PERP"], ["BTC-PERP", "ETH-PERP"]])):
        sym = params.symbols[symbol]
        size = draw(st.integers(1, 20_000)) * draw(st.sampled_from([1, -1]))
        entry = draw(st.integers(10 ** (sym.price_decimals + 2), 10 ** (sym.price_decimals + 5)))
        mark = max(1, entry * draw(st.integers(700_000, 1_300_000)) // PPM)
        legs.append(Leg(sym, size, entry, mark))
    collateral = draw(st.integers(-1_000, 200_000)) * 10**6 // draw(st.sampled_from([1, 7, 1000]))
    return collateral, legs


def liquidation_value(collateral, legs, sizes):
    """LV = C + Σ floor(q·(X − E)), written out with plain integers."""
    total = collateral
    for leg, size in zip(legs, sizes):
        if size:
            x = execution_price(leg.sym, leg.size_lots, leg.mark_ticks)
            total += (size * (x - leg.entry_ticks) * leg.sym.value_num) // leg.sym.value_den
    return total


@given(st.data())
@SETTINGS
def test_liquidation_invariants(data):
    params = data.draw(parameter_sets())
    collateral, legs = data.draw(scopes(params))
    if not margin_state(collateral, legs).liquidatable():
        label("healthy scope")
        return
    label("multi-position" if len(legs) > 1 else "one position")
    plan = plan_liquidation(collateral, legs, params)
    # the split balances to the unit and nothing is negative
    assert plan.liquidator_units + plan.protocol_units + plan.insurance_fund_units == plan.penalty_units
    assert min(plan.liquidator_units, plan.protocol_units, plan.insurance_fund_units, plan.shortfall_units) >= 0
    # collateral: C + Σ R − Σ F; never negative, except a bankruptcy's −shortfall before cover
    realized = sum(c.realized_pnl_units for c in plan.closes)
    assert plan.collateral_after_units == collateral + realized - plan.penalty_units
    if plan.bankrupt:
        assert plan.penalty_units == 0 and plan.collateral_after_units == -plan.shortfall_units
        assert all(c.remaining_lots == 0 for c in plan.closes)
    else:
        assert plan.collateral_after_units >= 0 and plan.shortfall_units == 0
    # each penalty ≤ the liquidation value left right after its close (replayed independently)
    sizes = {leg.sym.symbol: leg.size_lots for leg in legs}
    running = collateral
    for close in plan.closes:
        sign = 1 if close.side == "long" else -1
        sizes[close.symbol] -= sign * close.closed_lots
        running += close.realized_pnl_units
        lv_after_close = liquidation_value(running, legs, [sizes[leg.sym.symbol] for leg in legs])
        assert 0 <= close.penalty_units <= max(0, lv_after_close)
        running -= close.penalty_units
    assert running == plan.collateral_after_units


def random_scenario(draw, params):
    accounts = [f"acct-{i:02d}" for i in range(draw(st.integers(1, 6)))]
    lines = []  # (kind, value)
    seq_of = {}
    mark_seq = {"BTC-PERP": 1, "ETH-PERP": 1}
    prices = {"BTC-PERP": 200_000, "ETH-PERP": 150_000}
    lines.append(("mark", {"symbol": "BTC-PERP", "mark_price": "20000.0", "ts": T, "seq": 1}))
    lines.append(("mark", {"symbol": "ETH-PERP", "mark_price": "1500.00", "ts": T, "seq": 1}))
    ts = T
    for account in accounts:
        seq_of[account] = 1
        lines.append(("pos", balance(account, str(draw(st.integers(50, 5_000))), 1, ts)))
        for symbol, fmt in (("BTC-PERP", "{:.3f}"), ("ETH-PERP", "{:.2f}")):
            if draw(st.booleans()):
                seq_of[account] += 1
                size = draw(st.integers(-3000, 3000)) / (1000 if symbol == "BTC-PERP" else 100)
                entry = "20000.0" if symbol == "BTC-PERP" else "1500.00"
                extra = {}
                if draw(st.integers(0, 4)) == 0:
                    extra = {"margin_mode": "isolated", "isolated_margin": str(draw(st.integers(0, 800)))}
                lines.append(("pos", position(account, symbol, fmt.format(size), entry, seq_of[account], ts, **extra)))
    for _ in range(draw(st.integers(1, 25))):
        ts += draw(st.integers(1, 800))
        symbol = draw(st.sampled_from(["BTC-PERP", "ETH-PERP"]))
        prices[symbol] = max(1, prices[symbol] * draw(st.integers(960_000, 1_030_000)) // PPM)
        mark_seq[symbol] += 1
        decimals = 1 if symbol == "BTC-PERP" else 2
        text = f"{prices[symbol] // 10**decimals}.{prices[symbol] % 10**decimals:0{decimals}d}"
        lines.append(("mark", {"symbol": symbol, "mark_price": text, "ts": ts, "seq": mark_seq[symbol]}))
    return lines


def run(params, lines, use_index=True):
    driver = Driver(params)
    driver.engine.use_index = use_index
    for kind, value in lines:
        if kind == "mark":
            driver.mark(value["symbol"], value["mark_price"], value["ts"], value["seq"])
        else:
            driver.positions(value)
    return driver


@given(st.data())
@SETTINGS
def test_engine_invariants_over_random_crashes(data):
    params = data.draw(parameter_sets())
    lines = random_scenario(data.draw, params)
    driver = run(params, lines)
    label("liquidations" if driver.liquidations() else "no liquidation")
    label("bankruptcy" if any(e["bankrupt"] for e in driver.liquidations()) else "no bankruptcy")
    floor = params.insurance_floor_units
    for entry in driver.values("insurance-fund", "insurance_fund_entry"):
        # the fund never pays below its floor; a fund that started below it only receives (SPEC §5)
        if parse_decimal(entry["delta"], 6) < 0:
            assert parse_decimal(entry["balance_after"], 6) >= floor
    for event in driver.liquidations():
        net = {}
        for transfer in event["transfers"]:
            amount = parse_decimal(transfer["amount"], 6)
            assert amount > 0
            net[transfer["from"]] = net.get(transfer["from"], 0) - amount
            net[transfer["to"]] = net.get(transfer["to"], 0) + amount
        assert sum(net.values()) == 0  # every journal entry balances to the unit
        realized = sum(parse_decimal(c["realized_pnl"], 6) for c in event["closes"])
        before, after = parse_decimal(event["collateral_before"], 6), parse_decimal(event["collateral_after"], 6)
        assert before + realized + net.get(f"account:{event['account_id']}", 0) == after >= 0
        totals = {k: parse_decimal(v, 6) for k, v in event["totals"].items()}
        assert totals["shortfall"] == totals["insurance_cover"] + totals["socialized_loss"]


@given(st.data())
@SETTINGS
def test_same_input_same_bytes_and_the_index_finds_what_a_full_scan_finds(data):
    params = data.draw(parameter_sets())
    lines = random_scenario(data.draw, params)
    first = b"".join(format_output(o) for o in run(params, lines).outputs)
    second = b"".join(format_output(o) for o in run(params, lines).outputs)
    full_scan = b"".join(format_output(o) for o in run(params, lines, use_index=False).outputs)
    assert first == second
    assert first == full_scan


def interleaved_scenario(draw, params):
    """Ticks interleaved with account events, drawn while an engine (index on) runs them: balance
    events with the same or another collateral, position events identical to the one held or not
    (resized, closed, switched to isolated), acks of a pending liquidation (its id read from the
    engine), and every ``check`` step asserted on the engine. Returns the lines and the driver."""
    driver = Driver(params)
    lines = []
    ts = T
    prices = {"BTC-PERP": 200_000, "ETH-PERP": 150_000}
    mark_seq = {"BTC-PERP": 0, "ETH-PERP": 0}
    seq_of: dict[str, int] = {}
    held: dict[tuple[str, str], dict] = {}  # (account, symbol) → the last position event sent
    collateral_of: dict[str, str] = {}
    fmt = {"BTC-PERP": ("{:.3f}", 1000, "20000.0"), "ETH-PERP": ("{:.2f}", 100, "1500.00")}

    def send(kind, value):
        lines.append((kind, value))
        if kind == "mark":
            driver.mark(value["symbol"], value["mark_price"], value["ts"], value["seq"])
        else:
            driver.positions(value)
        # the kept counts are the recount after every event (metrics read the kept ones)
        assert (driver.engine.pending_scopes, driver.engine.call_scopes) == driver.engine.recount_scopes()

    def tick(symbol):
        prices[symbol] = max(1, prices[symbol] * draw(st.integers(960_000, 1_030_000)) // PPM)
        mark_seq[symbol] += 1
        decimals = 1 if symbol == "BTC-PERP" else 2
        text = f"{prices[symbol] // 10**decimals}.{prices[symbol] % 10**decimals:0{decimals}d}"
        send("mark", {"symbol": symbol, "mark_price": text, "ts": ts, "seq": mark_seq[symbol]})

    def position_event(account, symbol, **extra):
        pattern, scale, entry = fmt[symbol]
        size = pattern.format(draw(st.integers(-3000, 3000)) / scale)
        if draw(st.integers(0, 4)) == 0:
            extra = {"margin_mode": "isolated", "isolated_margin": str(draw(st.integers(0, 800))), **extra}
        seq_of[account] += 1
        event = position(account, symbol, size, entry, seq_of[account], ts, **extra)
        held[(account, symbol)] = event
        send("pos", event)

    accounts = [f"acct-{i:02d}" for i in range(draw(st.integers(1, 5)))]
    if draw(st.booleans()):  # marks first, or accounts first (scopes watched until a mark)
        tick("BTC-PERP")
        tick("ETH-PERP")
    for account in accounts:
        seq_of[account] = 1
        collateral_of[account] = str(draw(st.one_of(st.integers(50, 600), st.integers(50, 5_000))))
        send("pos", balance(account, collateral_of[account], 1, ts))
        for symbol in ("BTC-PERP", "ETH-PERP"):
            if draw(st.booleans()):
                position_event(account, symbol)
    for _ in range(draw(st.integers(1, 40))):
        ts += draw(st.integers(1, 800))
        step = draw(st.sampled_from(["tick", "tick", "tick", "same_balance", "balance", "same_position",
                                     "position", "ack"]))
        account = draw(st.sampled_from(accounts))
        if step == "tick" or mark_seq["BTC-PERP"] == 0:
            tick(draw(st.sampled_from(["BTC-PERP", "ETH-PERP"])))
        elif step in ("same_balance", "balance"):
            if step == "balance":
                collateral_of[account] = str(draw(st.one_of(st.integers(0, 600), st.integers(0, 5_000))))
            seq_of[account] += 1
            send("pos", balance(account, collateral_of[account], seq_of[account], ts))
        elif step == "same_position":
            symbol = draw(st.sampled_from(["BTC-PERP", "ETH-PERP"]))
            if (account, symbol) in held:  # the very position held, again (a new seq)
                seq_of[account] += 1
                send("pos", {**held[(account, symbol)], "seq": seq_of[account], "ts": ts})
        elif step == "position":
            position_event(account, draw(st.sampled_from(["BTC-PERP", "ETH-PERP"])))
        else:
            pending = sorted((a, s, p.liquidation_id) for a, state in driver.engine.accounts.items()
                             for s, p in state.pending.items())
            if pending:
                account, scope, liquidation_id = draw(st.sampled_from(pending))
                symbol = scope if scope != "cross" else draw(st.sampled_from(["BTC-PERP", "ETH-PERP"]))
                position_event(account, symbol, liquidation_id=liquidation_id)
    return lines, driver


@given(st.data())
@SETTINGS
def test_account_events_between_ticks_the_index_finds_what_a_full_scan_finds(data):
    """An account event re-evaluates only the scopes it changed or that hold no band (the rest
    are in the zone of their last evaluation); the full scan evaluates every scope of the account
    and every holder on each tick: both emit the same bytes."""
    params = data.draw(parameter_sets())
    lines, indexed = interleaved_scenario(data.draw, params)
    label("liquidations" if indexed.liquidations() else "no liquidation")
    label("margin calls" if indexed.values("margin-calls") else "no margin call")
    label("acks" if indexed.engine.counters["acks"] else "no ack")
    full_scan = run(params, lines, use_index=False)
    assert b"".join(format_output(o) for o in indexed.outputs) == b"".join(format_output(o) for o in full_scan.outputs)
    assert indexed.engine.counters["evaluations"] <= full_scan.engine.counters["evaluations"]
    assert (full_scan.engine.pending_scopes, full_scan.engine.call_scopes) == full_scan.engine.recount_scopes()


@given(st.data())
@SETTINGS
def test_kept_scope_counts_equal_the_recount_over_reloads_and_takeovers(data):
    """The pending and margin-call counts the metrics read are kept as they change; after
    reloading the accounts from their changelog records (a rebalance: load_accounts) or taking
    some over (take_over), and after every later event, they equal the recount."""
    import orjson

    from worker.core.engine import AccountState

    params = data.draw(parameter_sets())
    lines, driver = interleaved_scenario(data.draw, params)
    engine = driver.engine

    records = {a: orjson.dumps(state.to_record()) for a, state in engine.accounts.items()}  # the changelog

    def copies(ids):
        return {a: AccountState.from_record(orjson.loads(records[a])) for a in ids}

    ids = sorted(engine.accounts)
    taken = set(data.draw(st.sets(st.sampled_from(ids)))) if ids else set()
    if data.draw(st.booleans()):
        engine.load_accounts(copies(ids))
    else:  # a rebalance: keep some, take the others over (as the worker does after load_accounts)
        kept = copies(sorted(set(ids) - taken))
        engine.load_accounts(kept)
        assert (engine.pending_scopes, engine.call_scopes) == engine.recount_scopes()
        engine.take_over(copies(sorted(taken)))
    assert (engine.pending_scopes, engine.call_scopes) == engine.recount_scopes()
    assert sorted(engine.accounts) == ids
    for kind, value in lines[-10:]:  # the same events again are stale; the ticks are not replayed
        if kind == "pos":
            driver.positions(value)
        assert (engine.pending_scopes, engine.call_scopes) == engine.recount_scopes()
    engine.load_accounts({})  # revoked: nothing left to count
    assert (engine.pending_scopes, engine.call_scopes) == (0, 0)
