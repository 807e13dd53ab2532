#!/usr/bin/env python3
"""Check the JSON-lines stdout of `nibble (plan|quantize|build) --json`
(docs/cli.md "Progress events"): every line parses as a JSON object; every
line but the last is an event; stage events pair up (start before end, no
end without a start, numbered stages in order); progress events of a stage
never go back and never pass their total; the last line is the result and
has the key given as argv[2]. argv[3:]: stages that must appear."""
import json
import sys

path, result_key, want = sys.argv[1], sys.argv[2], sys.argv[3:]
lines = [l for l in open(path, encoding="utf-8").read().split("\n") if l]
assert lines, "no output"
objs = []
for k, l in enumerate(lines):
    try:
        objs.append(json.loads(l))
    except ValueError as e:
        sys.exit(f"line {k + 1} is not JSON: {e}: {l[:120]}")
    assert isinstance(objs[-1], dict), f"line {k + 1} is not an object"
*events, result = objs
assert "event" not in result and result_key in result, f"last line is not the result: {lines[-1][:160]}"
open_, seen, last_index, progress = {}, set(), 0, {}
for e in events:
    kind = e.get("event")
    assert kind in ("stage", "progress"), f"unknown event {e}"
    if kind == "stage":
        name, phase = e["stage"], e["phase"]
        seen.add(name)
        if "index" in e:
            assert e["index"] >= last_index and 1 <= e["index"] <= e["of"], f"stage out of order: {e}"
            last_index = e["index"]
        if phase == "start":
            assert name not in open_, f"stage {name} started twice"
            open_[name] = True
        elif phase == "end":
            assert open_.pop(name, False), f"stage {name} ended without a start"
            assert e["seconds"] >= 0
        else:
            assert phase == "skip", e
    else:
        name = e["stage"]
        seen.add(name)
        assert e["unit"] in ("bytes", "tokens", "layer-chunks"), e
        assert 0 <= e["done"] <= e["total"] or e["total"] == 0, f"progress past its total: {e}"
        prev = progress.get(name)
        if prev is not None and e["done"] < prev:
            progress[name] = e["done"]  # a new run of the same stage starts at 0
            assert e["done"] == 0, f"progress of {name} went back: {e}"
        progress[name] = e["done"]
assert not open_, f"stages started but not ended: {sorted(open_)}"
missing = [w for w in want if w not in seen]
assert not missing, f"no events for {missing} (saw {sorted(seen)})"
print(f"ok: {len(events)} events ({', '.join(sorted(seen))}) then the result")
