"""safetensors interop: nibble's reader and writer against PyPI `safetensors`.

Files written by safetensors.numpy.save_file (many dtypes, 0-d and empty
tensors, unicode names, metadata) go through `nibble convert a.safetensors -o
b.safetensors`; b must be byte-identical to a (nibble's writer orders tensors
and pads the header exactly like the reference) and load to identical arrays.
A `--type f16` conversion must equal what save_file writes for the same
arrays cast by numpy, a sharded checkpoint must merge losslessly, and a
truncated file must be refused without leaving an output behind.

Env: NB_BIN = the nibble CLI. Exit 77 (skip) when numpy/safetensors are not
importable or the CLI has no `convert` yet.
"""
import glob
import json
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file
except ImportError as e:  # pragma: no cover - environment dependent
    print(f"SKIP: numpy/safetensors not importable ({e})")
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

NB_BIN = harness.nb_bin()
probe = subprocess.run([NB_BIN, "convert", "--help"], capture_output=True, text=True)
if probe.returncode != 0 or "convert" not in probe.stdout + probe.stderr:
    print("SKIP: this nibble has no `convert` command yet")
    sys.exit(77)

check = harness.Checks()


def convert(src, dst, *extra):
    r = subprocess.run([NB_BIN, "convert", src, "-o", dst, "--quiet", *extra], capture_output=True, text=True)
    return r


def same_arrays(a, b, what):
    check(sorted(a) == sorted(b), f"{what}: tensor names differ: {sorted(a)} vs {sorted(b)}")
    for k in a:
        if k not in b:
            continue
        check(a[k].dtype == b[k].dtype and a[k].shape == b[k].shape,
              f"{what}: {k}: {a[k].dtype}{a[k].shape} vs {b[k].dtype}{b[k].shape}")
        check(a[k].tobytes() == b[k].tobytes(), f"{what}: {k}: data differs")


def header(path):
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        return n, f.read(n)


rng = np.random.default_rng(1234)
tmp = tempfile.mkdtemp(prefix="nb-st-interop-")


def p(name):
    return os.path.join(tmp, name)


def rand(shape, dtype):
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if dtype.kind == "f":
        return rng.standard_normal(size=shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)


many = {
    "model.embed_tokens.weight": rand((7, 5), np.float32),
    "model.layers.0.self_attn.q_proj.weight": rand((4, 5), np.float16),
    "model.norm.weight": rand((5,), np.float32),
    "lm_head.weight": rand((3, 2, 2, 2), np.float64),
    "scalar.f32": np.array(3.5, np.float32),
    "scalar.u8": np.array(200, np.uint8),
    "empty.f32": np.zeros((0, 4), np.float32),
    "empty.i64": np.zeros((3, 0), np.int64),
    "ids.i64": rand((2, 3), np.int64),
    "ids.i32": rand((9,), np.int32),
    "ids.i16": rand((3,), np.int16),
    "ids.i8": rand((5,), np.int8),
    "ids.u16": rand((2,), np.uint16),
    "ids.u32": rand((2,), np.uint32),
    "ids.u64": rand((1,), np.uint64),
    "mask": rand((6,), np.bool_),
    "ünïcode.wéight": rand((2,), np.float32),
    "Zupper": rand((1,), np.float32),
}

cases = [
    ("many_one_meta", many, {"format": "pt"}),
    ("many_no_meta", many, None),
    # several keys: the reference writes them in hash-map order; nibble keeps the
    # file's order, so the round trip is still byte-identical
    ("meta_escapes", {"w": rand((2, 2), np.float32)},
     {"format": "pt", "quote\"d": "line\nbreak\ttab", "ctl": "\x01\x1f\x7f", "uni": "é 中 😀", "empty": ""}),
    ("no_tensors", {}, {"format": "pt"}),
    ("nothing", {}, None),
]
for name, tensors, meta in cases:
    a, b = p(name + ".a.safetensors"), p(name + ".b.safetensors")
    save_file(tensors, a, metadata=meta)
    r = convert(a, b)
    check(r.returncode == 0, f"{name}: nibble convert failed: {r.stderr.strip()}")
    if r.returncode != 0:
        continue
    ba, bb = open(a, "rb").read(), open(b, "rb").read()
    if ba != bb:
        ha, hb = header(a), header(b)
        print(f"  reference header {ha}\n  nibble header    {hb}")
    check(ba == bb, f"{name}: nibble's output is not byte-identical to safetensors' ({len(ba)} vs {len(bb)} bytes)")
    same_arrays(tensors, load_file(b), name)
    with safe_open(b, "np") as f:
        check((f.metadata() or None) == meta, f"{name}: metadata {f.metadata()} != {meta}")
    check(not glob.glob(b + ".partial*"), f"{name}: .partial left behind")

# --type f16: 2-D floats become F16, 1-D floats F32, integers unchanged; the
# result must equal save_file of the same arrays cast by numpy (round to nearest even).
src = {"w2": rand((6, 4), np.float32), "w3": rand((2, 3, 4), np.float32), "bias": rand((4,), np.float16),
       "ids": rand((3, 2), np.int32), "s": np.array(1.25, np.float32)}
want = {"w2": src["w2"].astype(np.float16), "w3": src["w3"].astype(np.float16),
        "bias": src["bias"].astype(np.float32), "ids": src["ids"], "s": src["s"].astype(np.float32)}
a, b, ref = p("cast.a.safetensors"), p("cast.b.safetensors"), p("cast.ref.safetensors")
save_file(src, a, metadata={"format": "pt"})
save_file(want, ref, metadata={"format": "pt"})
r = convert(a, b, "--type", "f16")
check(r.returncode == 0, f"cast: nibble convert --type f16 failed: {r.stderr.strip()}")
if r.returncode == 0:
    same_arrays(want, load_file(b), "cast")
    check(open(b, "rb").read() == open(ref, "rb").read(), "cast: output differs from save_file of numpy-cast arrays")

# sharded checkpoint -> one file with every tensor and the merged metadata
s1 = {"a.weight": rand((3, 3), np.float32), "a.bias": rand((3,), np.float32)}
s2 = {"b.weight": rand((2, 3), np.float16)}
save_file(s1, p("model-00001-of-00002.safetensors"), metadata={"format": "pt"})
save_file(s2, p("model-00002-of-00002.safetensors"), metadata={"format": "pt"})
index = {"metadata": {"total_size": 3 * 3 * 4 + 3 * 4 + 2 * 3 * 2},
         "weight_map": {"a.bias": "model-00001-of-00002.safetensors", "a.weight": "model-00001-of-00002.safetensors",
                        "b.weight": "model-00002-of-00002.safetensors"}}
with open(p("model.safetensors.index.json"), "w") as f:
    json.dump(index, f)
merged = p("merged.safetensors")
r = convert(p("model.safetensors.index.json"), merged)
check(r.returncode == 0, f"sharded: nibble convert failed: {r.stderr.strip()}")
if r.returncode == 0:
    same_arrays({**s1, **s2}, load_file(merged), "sharded")
    with safe_open(merged, "np") as f:
        md = f.metadata() or {}
    check(md.get("format") == "pt" and md.get("total_size") == str(index["metadata"]["total_size"]),
          f"sharded: metadata {md}")

# truncated input: refused, nothing written
a = p("trunc.a.safetensors")
save_file({"w": rand((4, 4), np.float32)}, a)
data = open(a, "rb").read()
for cut in (1, 4, len(data) - 8 - header(a)[0] + 3):
    t = p(f"trunc{cut}.safetensors")
    with open(t, "wb") as f:
        f.write(data[:-cut])
    out = p(f"trunc{cut}.out.safetensors")
    r = convert(t, out)
    check(r.returncode != 0, f"truncated by {cut}: nibble accepted it")
    check(not os.path.exists(out) and not glob.glob(out + ".partial*"), f"truncated by {cut}: output left behind")
    check("trunc" in r.stderr, f"truncated by {cut}: error does not name the file: {r.stderr.strip()}")

if check.summary():
    print(f"files kept in {tmp}")
    sys.exit(1)
print(f"OK: {len(cases)} round trips byte-identical, f16 cast, sharded merge, truncation refused")
