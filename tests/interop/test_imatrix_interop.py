#!/usr/bin/env python3
"""imatrix interop with llama.cpp's formats, checked with PyPI gguf (and
libggml-python's ggml_quantize_chunk when installed):

1. `nibble calibrate` writes llama.cpp's GGUF imatrix layout: general.type,
   imatrix.datasets (string array), imatrix.chunk_count / chunk_size (u32),
   per entry "<name>.in_sum2" F32 {n_in, n_mat}, "<name>.counts" F32
   {1, n_mat} (n_dims without trailing 1s), "<name>.in_sum", sorted by name.
2. Its `--dat` output parses with a reader written from llama.cpp's legacy
   loader, and values / ncall equal in_sum2 / counts.
3. An imatrix written here with gguf-py the way llama-imatrix writes it is
   accepted by `nibble quantize --imatrix`; with libggml, every quantized
   tensor that has an entry is byte-identical to ggml_quantize_chunk with
   quant_weights = in_sum2 / counts (per expert slice) — what llama-quantize
   computes. The same file with a renamed tensor is refused, naming it.
"""
import ctypes
import os
import struct
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import gguf
except ImportError as e:
    print(f"SKIP: {e}")
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

NB = harness.nb_bin()
DATA = harness.DATA
check = harness.Checks()
fail = check.fail
nb = harness.run


def load_libggml():
    try:
        import libggml  # type: ignore
    except ImportError:
        return None
    base = os.path.dirname(libggml.__file__)
    for sub in ("lib64", "lib"):
        p = os.path.join(base, sub, "libggml-base.so")
        if os.path.exists(p):
            lib = ctypes.CDLL(p)
            lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                                ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
            lib.ggml_quantize_chunk.restype = ctypes.c_size_t
            return lib
    return None


def field(r, key):
    f = r.fields[key]
    return f.contents() if hasattr(f, "contents") else f.parts[f.data[0]]


def read_dat(path):
    """llama.cpp's legacy loader: {name: (ncall, values)}, chunk_count, dataset."""
    b = open(path, "rb").read()
    o = 0
    (n,) = struct.unpack_from("<i", b, o); o += 4
    out = {}
    for _ in range(n):
        (ln,) = struct.unpack_from("<i", b, o); o += 4
        name = b[o:o + ln].decode(); o += ln
        ncall, nval = struct.unpack_from("<ii", b, o); o += 8
        out[name] = (ncall, np.frombuffer(b, "<f4", nval, o).copy()); o += 4 * nval
    (chunks,) = struct.unpack_from("<i", b, o); o += 4
    (ln,) = struct.unpack_from("<i", b, o); o += 4
    return out, chunks, b[o:o + ln].decode()


def main():
    lib = load_libggml()
    calib = os.path.join(DATA, "text", "calib.txt")
    with tempfile.TemporaryDirectory() as tmp:
        moe = os.path.join(tmp, "moe.gguf")
        nb("synth", "--arch", "mixtral", "--layers", "2", "--dim", "256", "--ff", "256", "--experts", "4",
           "--vocab", "400", "--seed", "3", "-o", moe)
        im = os.path.join(tmp, "im.gguf")
        dat = os.path.join(tmp, "im.dat")
        common = ["--calib", calib, "--ctx", "64", "--calib-tokens", "512", "--quiet"]
        nb("calibrate", moe, "-o", im, *common)
        nb("calibrate", moe, "-o", dat, "--dat", *common)

        # 1. layout
        r = gguf.GGUFReader(im)
        if field(r, "general.type") != "imatrix":
            fail("general.type is not imatrix")
        for key, t in (("imatrix.chunk_count", gguf.GGUFValueType.UINT32),
                       ("imatrix.chunk_size", gguf.GGUFValueType.UINT32)):
            if r.fields[key].types != [t]:
                fail(f"{key}: type {r.fields[key].types}")
        if r.fields["imatrix.datasets"].types != [gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.STRING]:
            fail("imatrix.datasets is not a string array")
        if int(field(r, "imatrix.chunk_count")) != 8 or int(field(r, "imatrix.chunk_size")) != 64:
            fail("chunk_count/chunk_size")
        src = {t.name: t for t in gguf.GGUFReader(moe).tensors}
        entries = {}
        names = [t.name for t in r.tensors if not t.name.startswith("nibble.")]
        bases = []
        for n in names:
            for suf in (".in_sum2", ".counts", ".in_sum"):
                if n.endswith(suf):
                    base = n[: -len(suf)]
                    if not bases or bases[-1] != base:
                        bases.append(base)
                    entries.setdefault(base, {})[suf] = next(t for t in r.tensors if t.name == n)
                    break
            else:
                fail(f"unexpected tensor {n}")
        if bases != sorted(bases):
            fail("entries are not sorted by name")
        for base, e in entries.items():
            if base not in src:
                fail(f"{base}: not a tensor of the model")
                continue
            s = src[base]
            n_in = int(s.shape[0])
            n_mat = int(s.shape[2]) if len(s.shape) > 2 else 1
            s2, c = e[".in_sum2"], e[".counts"]
            if s2.tensor_type != gguf.GGMLQuantizationType.F32 or c.tensor_type != gguf.GGMLQuantizationType.F32:
                fail(f"{base}: not F32")
            want2 = [n_in] + ([n_mat] if n_mat > 1 else [])
            if [int(x) for x in s2.shape] != want2 or [int(x) for x in c.shape] != ([1, n_mat] if n_mat > 1 else [1]):
                fail(f"{base}: shapes {list(s2.shape)} {list(c.shape)}")
            cnt = np.asarray(c.data, dtype=np.float64).reshape(-1)
            if np.any(cnt != np.round(cnt)) or np.any(np.asarray(s2.data) < 0):
                fail(f"{base}: counts not whole or negative sums")
            if n_mat == 1 and cnt[0] != 512:
                fail(f"{base}: dense count {cnt[0]} != 512 tokens")

        # 2. legacy .dat
        d, chunks, dataset = read_dat(dat)
        if chunks != 8 or not dataset.endswith("calib.txt"):
            fail(f".dat trailer: {chunks} {dataset}")
        for base, e in entries.items():
            cnt = np.asarray(e[".counts"].data, dtype=np.float64).reshape(-1)
            s2 = np.asarray(e[".in_sum2"].data, dtype=np.float64).reshape(len(cnt), -1)
            if base not in d:
                if np.all(cnt == 0):
                    continue
                fail(f".dat lacks {base}")
                continue
            ncall, vals = d[base]
            if ncall != int(np.ceil(cnt.max() / 64)):
                fail(f"{base}: ncall {ncall}")
            mean = np.where(cnt[:, None] > 0, s2 / np.maximum(cnt[:, None], 1), 1.0).reshape(-1)
            if not np.allclose(vals.astype(np.float64) / ncall, mean, rtol=1e-6, atol=0):
                fail(f"{base}: .dat values / ncall differ from in_sum2 / counts")

        # 3. an imatrix written the way llama-imatrix writes it
        rng = np.random.default_rng(1)
        py_im = os.path.join(tmp, "py.gguf")
        w = gguf.GGUFWriter(py_im, arch="")
        w.add_type("imatrix")
        w.add_array("imatrix.datasets", ["synthetic"])
        w.add_uint32("imatrix.chunk_count", 3)
        w.add_uint32("imatrix.chunk_size", 512)
        weights = {}
        for base in ("blk.0.attn_q.weight", "blk.1.ffn_gate_exps.weight", "blk.1.ffn_down_exps.weight"):
            s = src[base]
            n_in = int(s.shape[0])
            n_mat = int(s.shape[2]) if len(s.shape) > 2 else 1
            sums = (rng.random((n_mat, n_in)) ** 4 * 100).astype(np.float32)
            counts = rng.integers(1, 1000, size=(n_mat, 1)).astype(np.float32)
            if n_mat > 1:
                counts[1] = 0  # an expert without tokens: neutral weights
            w.add_tensor(base + ".in_sum2", sums if n_mat > 1 else sums.reshape(-1))
            w.add_tensor(base + ".counts", counts if n_mat > 1 else counts.reshape(-1))
            weights[base] = np.where(counts > 0, sums / np.maximum(counts, 1), np.float32(1)).astype(np.float32)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        for mix in ("q4_k_m", "iq4_xs", "q4_0"):
            out = os.path.join(tmp, f"q_{mix}.gguf")
            nb("quantize", moe, "-o", out, "--type", mix, "--imatrix", py_im, "--quiet")
            if lib is None:
                continue
            qt = {t.name: t for t in gguf.GGUFReader(out).tensors}
            for base, wt in weights.items():
                q, s = qt[base], src[base]
                x = np.asarray(s.data, dtype=np.float32)
                x = x.astype(np.float32).reshape(-1, int(s.shape[0]))
                n_in = int(s.shape[0])
                n_mat = wt.shape[0]
                rows = x.shape[0] // n_mat
                ours = np.asarray(q.data).tobytes()
                per = len(ours) // n_mat
                for e in range(n_mat):
                    xe = np.ascontiguousarray(x[e * rows:(e + 1) * rows])
                    buf = ctypes.create_string_buffer(per)
                    imp = np.ascontiguousarray(wt[e])
                    lib.ggml_quantize_chunk(int(q.tensor_type), xe.ctypes.data, buf, 0, rows, n_in, imp.ctypes.data)
                    if buf.raw != ours[e * per:(e + 1) * per]:
                        fail(f"{mix}: {base} expert {e} ({q.tensor_type.name}): bytes differ from ggml_quantize_chunk "
                             "with the imatrix")
        if lib is None:
            print("note: libggml-python not installed: imatrix quantization not compared with ggml")
        # a foreign entry is refused, naming it
        bad = os.path.join(tmp, "bad.gguf")
        w = gguf.GGUFWriter(bad, arch="")
        w.add_type("imatrix")
        w.add_array("imatrix.datasets", ["x"])
        w.add_uint32("imatrix.chunk_count", 1)
        w.add_uint32("imatrix.chunk_size", 512)
        w.add_tensor("blk.9.attn_q.weight.in_sum2", np.ones(256, dtype=np.float32))
        w.add_tensor("blk.9.attn_q.weight.counts", np.ones(1, dtype=np.float32))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        rr = nb("quantize", moe, "-o", os.path.join(tmp, "x.gguf"), "--type", "q4_0", "--imatrix", bad, ok=False)
        if rr.returncode != 2 or "blk.9.attn_q.weight" not in rr.stderr:
            fail(f"foreign imatrix: exit {rr.returncode}: {rr.stderr.strip()}")
    if check.summary():
        sys.exit(1)
    print("OK")


if __name__ == "__main__":
    main()
