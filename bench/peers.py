#!/usr/bin/env python3
"""Peers for `normkit bench`: ONNX Runtime (and PyTorch where installed) on the
same ops, shapes and thread counts, written as the same JSON lines plus a key
`impl` naming the peer.

    pip install numpy onnx onnxruntime          # torch is optional
    python3 bench/peers.py --threads 1 --out peers.json
    normkit bench --threads 1 --compare peers.json

Method, as in `normkit bench`: inputs rotate among buffer sets that together
exceed twice the last-level cache; each row is the median time of one call;
`gbps` counts the minimal bytes of the op (each tensor read or written once)
over that time; `copy_gbps` is the median of 11 copies of a 256 MiB buffer
split over the same number of threads (numpy's copy, threads from a pool, as
numpy's copy releases the GIL). Variants: `alloc` is the peer's normal call,
which returns new outputs (ONNX Runtime's `InferenceSession.run`; torch's
functional call); `into` writes into caller-provided outputs (ONNX Runtime's
I/O binding with preallocated output buffers). ONNX Runtime has no backward for
these ops outside its training build, so it has forward rows only.
"""

import argparse
import json
import math
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

ROW_SHAPES = [(8192, 768), (8192, 4096), (256, 65536)]


def last_level_cache():
    """Largest cache level's size from Linux's sysfs; 32 MiB if unreadable."""
    best = None
    base = "/sys/devices/system/cpu/cpu0/cache"
    for i in range(8):
        try:
            with open(f"{base}/index{i}/level") as f:
                level = int(f.read())
            with open(f"{base}/index{i}/size") as f:
                s = f.read().strip()
        except OSError:
            continue
        mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(s[-1], 1)
        size = int(s[:-1] if s[-1] in "KMG" else s) * mult
        if best is None or level > best[0]:
            best = (level, size)
    return best[1] if best else 32 << 20


def copy_bandwidth(threads):
    nbytes = 256 << 20
    src = np.arange(nbytes // 8, dtype=np.uint64)
    dst = np.zeros_like(src)
    parts = np.array_split(np.arange(src.size), threads)
    bounds = [(p[0], p[-1] + 1) for p in parts if p.size]
    with ThreadPoolExecutor(threads) as pool:

        def copy():
            t0 = time.perf_counter()
            list(pool.map(lambda b: np.copyto(dst[b[0] : b[1]], src[b[0] : b[1]]), bounds))
            return time.perf_counter() - t0

        copy()
        times = [copy() for _ in range(11)]
    return 2 * nbytes / statistics.median(times) / 1e9


def time_rotating(sets, call, min_calls, min_time):
    """Median seconds of one call, rotating over `sets` after one warm-up each."""
    for s in sets:
        call(s)
    times, start, i = [], time.perf_counter(), 0
    while len(times) < 400 and (len(times) < min_calls or time.perf_counter() - start < min_time):
        s = sets[i % len(sets)]
        t0 = time.perf_counter()
        call(s)
        times.append(time.perf_counter() - t0)
        i += 1
    return statistics.median(times)


def fill(shape, seed, scale, offset, dtype):
    rng = np.random.default_rng(seed)
    return (offset + scale * rng.uniform(-1.0, 1.0, size=shape)).astype(dtype)


def minimal_bytes(op, pas, rows, n, itemsize):
    big, nb, rb = rows * n * itemsize, n * itemsize, rows * itemsize
    if op == "layer_norm":
        return 2 * big + 2 * nb + 2 * rb if pas == "fwd" else 3 * big + 2 * rb + 3 * nb
    return 2 * big + nb + rb if pas == "fwd" else 3 * big + rb + 2 * nb


def ort_session(op, n, eps, threads, dtype):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    elem = TensorProto.FLOAT if dtype == np.float32 else TensorProto.DOUBLE
    x = helper.make_tensor_value_info("X", elem, ["rows", n])
    scale = helper.make_tensor_value_info("Scale", elem, [n])
    y = helper.make_tensor_value_info("Y", elem, ["rows", n])
    if op == "layer_norm":
        b = helper.make_tensor_value_info("B", elem, [n])
        node = helper.make_node("LayerNormalization", ["X", "Scale", "B"], ["Y"], axis=-1, epsilon=eps)
        inputs, opset = [x, scale, b], 17
    else:
        node = helper.make_node("RMSNormalization", ["X", "Scale"], ["Y"], axis=-1, epsilon=eps)
        inputs, opset = [x, scale], 23
    graph = helper.make_graph([node], op, inputs, [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def bench_ort(op, rows, n, threads, dtype, llc, budget, emit):
    import onnxruntime as ort

    itemsize = np.dtype(dtype).itemsize
    numel = rows * n
    sets_n = max(2, math.ceil(2 * llc / (2 * numel * itemsize)))
    sess = ort_session(op, n, 1e-5, threads, dtype)
    w = (1.0 + 0.25 * np.random.default_rng(7).uniform(-1, 1, n)).astype(dtype)
    b = (0.1 * np.random.default_rng(11).uniform(-1, 1, n)).astype(dtype)
    xs = [fill((rows, n), 1000 + i, 2.0, 0.5, dtype) for i in range(sets_n)]
    feeds = [{"X": x, "Scale": w, "B": b} if op == "layer_norm" else {"X": x, "Scale": w} for x in xs]

    median = time_rotating(feeds, lambda f: sess.run(None, f), *budget)
    emit(op, "fwd", "alloc", rows, n, median, itemsize)

    bindings = []
    for x in xs:
        io = sess.io_binding()
        io.bind_ortvalue_input("X", ort.OrtValue.ortvalue_from_numpy(x))
        io.bind_ortvalue_input("Scale", ort.OrtValue.ortvalue_from_numpy(w))
        if op == "layer_norm":
            io.bind_ortvalue_input("B", ort.OrtValue.ortvalue_from_numpy(b))
        y = np.empty_like(x)
        io.bind_output("Y", "cpu", 0, dtype, y.shape, y.ctypes.data)
        bindings.append((io, y))
    median = time_rotating(bindings, lambda s: sess.run_with_iobinding(s[0]), *budget)
    emit(op, "fwd", "into", rows, n, median, itemsize)


def bench_torch(op, rows, n, threads, dtype, llc, budget, emit):
    import torch

    torch.set_num_threads(threads)
    tdtype = torch.float32 if dtype == np.float32 else torch.float64
    itemsize = np.dtype(dtype).itemsize
    numel = rows * n
    sets_n = max(2, math.ceil(2 * llc / (3 * numel * itemsize)))
    w = torch.from_numpy((1.0 + 0.25 * np.random.default_rng(7).uniform(-1, 1, n)).astype(dtype))
    b = torch.from_numpy((0.1 * np.random.default_rng(11).uniform(-1, 1, n)).astype(dtype))
    xs = [torch.from_numpy(fill((rows, n), 1000 + i, 2.0, 0.5, dtype)) for i in range(sets_n)]
    dys = [torch.from_numpy(fill((rows, n), 2000 + i, 1.0, 0.0, dtype)) for i in range(sets_n)]
    F = torch.nn.functional
    with torch.no_grad():
        if op == "layer_norm":
            fwd = lambda x: F.layer_norm(x, (n,), w, b, 1e-5)
        else:
            fwd = lambda x: F.rms_norm(x, (n,), w, 1e-5)
        median = time_rotating(xs, fwd, *budget)
        emit(op, "fwd", "alloc", rows, n, median, itemsize)
    if op == "layer_norm":
        saved = [torch.native_layer_norm(x, (n,), w, b, 1e-5)[1:] for x in xs]
        sets = list(zip(xs, dys, saved))
        bwd = lambda s: torch.ops.aten.native_layer_norm_backward(s[1], s[0], (n,), s[2][0], s[2][1], w, b, [True, True, True])
    else:
        wg = w.clone().requires_grad_(True)

        def bwd(s):
            x = s[0].detach().requires_grad_(True)
            y = F.rms_norm(x, (n,), wg, 1e-5)
            y.backward(s[1])

        sets = list(zip(xs, dys))
    median = time_rotating(sets, bwd, *budget)
    # RMSNorm's backward through autograd includes its forward.
    emit(op, "bwd", "alloc", rows, n, median, itemsize)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", default=str(os.cpu_count() or 1), help="thread counts, e.g. 1,2")
    ap.add_argument("--out", required=True, help="JSON lines file to write")
    ap.add_argument("--quick", action="store_true", help="a short run")
    ap.add_argument("--dtype", default="f32", help="f32, f64 or f32,f64")
    ap.add_argument("--llc-mib", type=int, default=None, help="last-level cache size (default: from /sys)")
    args = ap.parse_args()
    llc = (args.llc_mib << 20) if args.llc_mib else last_level_cache()
    budget = (5, 0.1) if args.quick else (15, 0.4)
    peers = [("onnxruntime", bench_ort)]
    try:
        import torch  # noqa: F401

        peers.append(("torch", bench_torch))
    except ImportError:
        print("peers.py: torch not installed; measuring onnxruntime only", file=sys.stderr)
    import onnxruntime

    rows_out = []
    for threads in [int(t) for t in args.threads.split(",")]:
        copy_gbps = copy_bandwidth(threads)
        print(f"threads {threads}: copy_gbps {copy_gbps:.1f}", file=sys.stderr)
        for dname in args.dtype.split(","):
            dtype = {"f32": np.float32, "f64": np.float64}[dname]
            for rows, n in ROW_SHAPES:
                for op in ["layer_norm", "rms_norm"]:
                    for name, fn in peers:

                        def emit(op, pas, variant, rows, n, median, itemsize, name=name):
                            gbps = minimal_bytes(op, pas, rows, n, itemsize) / median / 1e9
                            row = {
                                "op": op, "pass": pas, "variant": variant, "dtype": dname,
                                "shape": [rows, n], "threads": threads, "median_ms": median * 1e3,
                                "gbps": gbps, "copy_gbps": copy_gbps, "fraction": gbps / copy_gbps,
                                "impl": name,
                            }
                            if name == "onnxruntime":
                                row["version"] = onnxruntime.__version__
                            print(json.dumps(row), file=sys.stderr)
                            rows_out.append(row)

                        try:
                            fn(op, rows, n, threads, dtype, llc, budget, emit)
                        except Exception as e:  # a peer lacking an op is reported, not fatal
                            print(f"peers.py: {name} {op} {dname} [{rows},{n}]: {e}", file=sys.stderr)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        for row in rows_out:
            f.write(json.dumps(row) + "\n")
    os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
