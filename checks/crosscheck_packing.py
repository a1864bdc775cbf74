#!/usr/bin/env python3
"""Compares src/output/packing.rs (through the packing_crosscheck example's JSON) with
  * compressed-tensors' own pack_to_int32 / unpack_from_int32 (weight_packed, packed_dim=1, and
    zero points, packed_dim=0), for 1..8 bits;
  * for GPTQ: AutoGPTQ's packing loop written out here from its description (2/4/8 bits: word row r
    |= code[32/b·r + k] << b·k; 3 bits: the 10|1|10|1|10 scheme, in % 32 == 0 only), the test aid's
    bit-array packer (tests/helpers/write_test_exports.py) and scripts/check_exports.py's unpacker;
  * numpy's float32 -> float16 conversion for the f16 helper.
  crosscheck_packing.py RUST.json OUT.json
"""
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "helpers"))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts"))  # check_exports.py
from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32, unpack_from_int32  # noqa: E402
import compressed_tensors  # noqa: E402
from write_test_exports import stream_pack  # noqa: E402
from check_exports import unpack_stream  # noqa: E402


def autogptq_pack_column(v, bits):
    """One output column's codes along the input -> its qweight words (uint32), in % 32 == 0."""
    v = [int(x) for x in v]
    words, i = [], 0
    while i < len(v):
        if bits in (2, 4, 8):
            w = 0
            for j in range(32 // bits):
                w |= v[i + j] << (bits * j)
            words.append(w & 0xFFFFFFFF)
            i += 32 // bits
        else:  # 3 bits: 32 values in 3 words
            a = sum(v[i + k] << (3 * k) for k in range(10)) | ((v[i + 10] << 30) & 0xFFFFFFFF)
            b = ((v[i + 10] >> 2) & 1) | sum(v[i + 11 + k] << (3 * k + 1) for k in range(10)) | ((v[i + 21] << 31) & 0xFFFFFFFF)
            c = ((v[i + 21] >> 1) & 3) | sum(v[i + 22 + k] << (3 * k + 2) for k in range(10))
            words += [a & 0xFFFFFFFF, b & 0xFFFFFFFF, c & 0xFFFFFFFF]
            i += 32
    return words


def main():
    data = json.load(open(sys.argv[1]))
    res = {"compressed_tensors": compressed_tensors.__version__, "torch": torch.__version__, "numpy": np.__version__}
    n_ok = n = 0
    fails = []

    def check(ok, what):
        nonlocal n_ok, n
        n += 1
        n_ok += bool(ok)
        if not ok:
            fails.append(what)

    for c in data["ct_rows"]:
        b, r, k = c["bits"], c["rows"], c["cols"]
        codes = torch.tensor(c["codes"], dtype=torch.int32).view(r, k)
        packed = torch.tensor(c["packed"], dtype=torch.int64).to(torch.int32).view(r, -1)
        signed = (codes - (1 << (b - 1))).to(torch.int8)
        theirs = pack_to_int32(signed, b)
        check(theirs.shape == packed.shape and torch.equal(theirs, packed), f"ct pack {b}b {r}x{k}")
        back = unpack_from_int32(packed, b, torch.Size((r, k)))
        check(torch.equal(back, signed), f"ct unpack {b}b {r}x{k}")
    res["ct_weight_packed_cases"] = len(data["ct_rows"])

    for c in data["ct_zero_points"]:
        b, o, g = c["bits"], c["out"], c["groups"]
        zeros = torch.tensor(c["zeros"], dtype=torch.int32).view(o, g)
        packed = torch.tensor(c["packed"], dtype=torch.int64).to(torch.int32).view(-1, g)
        signed = (zeros - (1 << (b - 1))).to(torch.int8)
        theirs = pack_to_int32(signed, b, packed_dim=0)
        check(theirs.shape == packed.shape and torch.equal(theirs, packed), f"ct zp pack {b}b {o}x{g}")
        back = unpack_from_int32(packed, b, torch.Size((o, g)), packed_dim=0)
        check(torch.equal(back, signed), f"ct zp unpack {b}b {o}x{g}")
    res["ct_zero_point_cases"] = len(data["ct_zero_points"])

    n_autogptq = 0
    for c in data["gptq"]:
        b, o, i, g = c["bits"], c["out"], c["in"], c["groups"]
        codes = np.array(c["codes"], dtype=np.int64).reshape(o, i)
        qweight = np.array(c["qweight"], dtype=np.int64).astype(np.int32).reshape(-1, o)
        check(np.array_equal(stream_pack(codes, b).T, qweight), f"gptq qweight vs bit-array packer {b}b {o}x{i}")
        back = unpack_stream(torch.from_numpy(np.ascontiguousarray(qweight.T)), i, b).numpy()
        check(np.array_equal(back, codes), f"gptq qweight unpack {b}b {o}x{i}")
        if i % 32 == 0:
            n_autogptq += 1
            ref = np.array([autogptq_pack_column(codes[r], b) for r in range(o)], dtype=np.uint32).T.view(np.int32)
            check(np.array_equal(ref, qweight), f"gptq qweight vs AutoGPTQ loop {b}b {o}x{i}")
        zeros = np.array(c["zeros"], dtype=np.int64).reshape(g, o)
        qzeros = np.array(c["qzeros"], dtype=np.int64).astype(np.int32).reshape(g, -1)
        check(np.array_equal(stream_pack((zeros - 1) & ((1 << b) - 1), b), qzeros), f"gptq qzeros v1 {b}b out {o}")
        zb = (unpack_stream(torch.from_numpy(qzeros), o, b).numpy() + 1) & ((1 << b) - 1)
        check(np.array_equal(zb, zeros), f"gptq qzeros unpack {b}b out {o}")
    res["gptq_cases"] = len(data["gptq"])
    res["gptq_cases_vs_autogptq_loop"] = n_autogptq

    f32 = np.array(data["f16"]["f32_bits"], dtype=np.uint32).view(np.float32)
    ours = np.array(data["f16"]["f16_bits"], dtype=np.uint16)
    with np.errstate(over="ignore"):
        theirs = f32.astype(np.float16).view(np.uint16)
    bad = np.nonzero(ours != theirs)[0]
    check(len(bad) == 0, f"f16: {len(bad)} of {len(f32)} differ from numpy, first {[hex(int(f32.view(np.uint32)[k])) for k in bad[:5]]}")
    res["f16_cases"] = int(len(f32))

    res.update(checks=n, passed=n_ok, failures=fails)
    json.dump(res, open(sys.argv[2], "w"), indent=2)
    print(json.dumps({k: v for k, v in res.items() if k != "failures"}), "\nfailures:", fails[:10])
    return 0 if n_ok == n else 1


if __name__ == "__main__":
    sys.exit(main())
