"""Writes examples/crash.jsonl: six accounts through a BTC/ETH sell-off (run from the repo root)."""
import json, hashlib, sys
def lid(a, s, seq, n): return hashlib.sha256(f"{a}|{s}|{seq}|{n}".encode()).hexdigest()[:32]
L=[]
def mark(sym, px, ts, seq): L.append({"topic":"mark-prices","key":sym,"value":{"symbol":sym,"mark_price":px,"ts":ts,"seq":seq}})
def pos(acct, sym, size, entry, seq, ts, **kw):
    v={"type":"position","account_id":acct,"symbol":sym,"size":size,"entry_price":entry,"seq":seq,"ts":ts}; v.update(kw)
    L.append({"topic":"positions","key":acct,"value":v})
def bal(acct, c, seq, ts, **kw):
    v={"type":"balance","account_id":acct,"asset":"USD","collateral":c,"seq":seq,"ts":ts}; v.update(kw)
    L.append({"topic":"positions","key":acct,"value":v})
t=1_700_000_000_000
mark("BTC-PERP","20000.0",t,1); mark("ETH-PERP","1500.00",t,1)
bal("alice","1000",1,t+1); pos("alice","BTC-PERP","1.000","20000.0",2,t+1)
bal("bob","3000",1,t+2); pos("bob","BTC-PERP","2.000","20500.0",2,t+2); pos("bob","ETH-PERP","-10.00","1500.00",3,t+2)
bal("carol","5000",1,t+3); pos("carol","BTC-PERP","0.500","20000.0",2,t+3,margin_mode="isolated",isolated_margin="300")
bal("dave","800",1,t+4); pos("dave","BTC-PERP","-1.000","20100.0",2,t+4)
bal("erin","700",1,t+5); pos("erin","BTC-PERP","3.000","20000.0",2,t+5)
L.append({"topic":"positions","key":"frank","value":[
  {"type":"balance","account_id":"frank","asset":"USD","collateral":"2500","seq":1,"ts":t+6},
  {"type":"position","account_id":"frank","symbol":"ETH-PERP","size":"20.00","entry_price":"1500.00","seq":2,"ts":t+6}]})
seq={"BTC-PERP":1,"ETH-PERP":1}
ts=t
def tick(sym, px):
    global ts
    ts+=500; seq[sym]+=1; mark(sym, px, ts, seq[sym])
for p in ["19900.0","19800.0"]:
    tick("BTC-PERP",p)
# the matching engine acknowledges erin's liquidation: position closed, collateral after penalty
pos("erin","BTC-PERP","0.000","0",3,ts+100,liquidation_id=lid("erin","cross",2,0))
bal("erin","0",4,ts+101)
for p in ["19700.0","19600.0","19500.0","19400.0"]:
    tick("BTC-PERP",p)
tick("ETH-PERP","1490.00")
L.append({"topic":"mark-prices","key":"BTC-PERP","value":{"symbol":"BTC-PERP","mark_price":"-1","ts":ts+1,"seq":99}})
for p in ["19300.0","19200.0","19100.0","19050.0"]:
    tick("BTC-PERP",p)
pos("alice","BTC-PERP","0.068","20000.0",3,ts+100,liquidation_id=lid("alice","cross",2,0))
bal("alice","69.89531",4,ts+101)
for p in ["1450.00","1400.00","1380.00"]:
    tick("ETH-PERP",p)
for p in ["18900.0","18500.0","18000.0"]:
    tick("BTC-PERP",p)
ts += 30000
tick("BTC-PERP","17900.0")
with open("examples/crash.jsonl","w") as f:
    for r in L: f.write(json.dumps(r, separators=(",",":"))+"\n")
    f.write('{"topic":"positions","key":"zed","value":{"type":"position"\n')
