#!/usr/bin/env python3
"""Peers for `normkit bench`: ONNX Runtime (and PyTorch where installed) on the
same ops, shapes and thread counts, written as the same JSON lines plus a key
`impl` naming the peer.

    pip install numpy onnx onnxruntime          # torch is optional
    python3 bench/peers.py --threads 1 --out peers.json
    normkit bench --threads 1 --compare peers.json

Method, as in `normkit bench`: inputs rotate among buffer sets whose inputs
alone together exceed twice the last-level cache; each row is the median time of one call;
`gbps` counts the minimal bytes of the op (each tensor read or written once)
over that time; `copy_gbps` is the median of 11 copies of a 256 MiB buffer
split over the same number of threads (numpy's copy, threads from a pool, as
numpy's copy releases the GIL). Variants: `alloc` is the peer's normal call,
which returns new outputs (ONNX Runtime's `InferenceSession.run`; torch's
functional call); `into` writes into caller-provided outputs (ONNX Runtime's
I/O binding with preallocated output buffers). ONNX Runtime has no backward for
these ops outside its training build, so it has forward rows only. Per-channel
ops (BatchNorm training/eval/folded, GroupNorm with 32 groups, InstanceNorm)
run at the NCHW shapes; channels-last BatchNorm (`_nhwc`, (N, H, W, C)) has
torch rows only (ONNX has no such op), on the NCHW view of the same data
with channels-last strides, which PyTorch's channels-last kernels take. torch's
backward rows call ATen's native backward kernels (the ones autograd calls)
with the statistics its forward saved; its RMSNorm backward, which has no
fused CPU kernel, is autograd through the composite forward, and only the
`backward` call is timed.
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
# Per-channel ops, (N, C, H, W), as in `normkit bench`; GroupNorm with 32 groups.
NCHW_SHAPES = [(32, 64, 56, 56), (8, 256, 28, 28)]
CHAN_OPS = ["batch_norm_train", "batch_norm_eval", "batch_norm_folded", "group_norm", "instance_norm"]
# Channels-last BatchNorm, (N, H, W, C): PyTorch only (ONNX has no such op).
NHWC_SHAPE = (32, 56, 56, 64)
NHWC_OPS = ["batch_norm_train_nhwc", "batch_norm_eval_nhwc", "batch_norm_folded_nhwc"]
GROUPS = 32


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
    return time_prepared(sets, lambda s: s, call, min_calls, min_time)


def time_prepared(sets, prepare, call, min_calls, min_time):
    """As `time_rotating`, but each timed `call(prepare(set))` is preceded by an
    untimed `prepare(set)` (an autograd graph to run backward through)."""
    for s in sets:
        call(prepare(s))
    times, start, i = [], time.perf_counter(), 0
    while len(times) < 400 and (len(times) < min_calls or time.perf_counter() - start < min_time):
        p = prepare(sets[i % len(sets)])
        t0 = time.perf_counter()
        call(p)
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


def chan_minimal_bytes(op, shape, itemsize, pas="fwd"):
    """Bytes of a per-channel op on (N, C, H, W) `shape`, counted as `normkit
    bench` counts them: each tensor read or written once. Backward: `x` and
    `dy` read, `dx` written; the saved statistics and the weight read;
    `dweight` and `dbias` written."""
    n, c = shape[0], shape[1]
    big, cb = math.prod(shape) * itemsize, c * itemsize
    stats = {"group_norm": n * GROUPS, "instance_norm": n * c}.get(op, c) * itemsize
    if pas == "bwd":
        return 3 * big + 2 * stats + 3 * cb
    if op in ("batch_norm_train", "batch_norm_eval"):
        return 2 * big + 4 * cb
    if op == "batch_norm_folded":
        return 2 * big + 2 * cb
    return 2 * big + 2 * cb + 2 * stats


def ort_options(threads):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return so


def ort_chan_session(op, c, eps, threads, dtype):
    """An ONNX Runtime session of one per-channel op on (N, C, H, W) input `X`.

    BatchNormalization (opset 15) with training_mode 1 (batch statistics) or 0
    (running statistics); the folded affine map as Mul and Add of [C, 1, 1]
    tensors; GroupNormalization (opset 21, per-channel scale and bias, which
    ONNX Runtime runs as its function expansion); InstanceNormalization.
    """
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    elem = TensorProto.FLOAT if dtype == np.float32 else TensorProto.DOUBLE
    dims = ["N", c, "H", "W"]
    extra_outputs = []
    x = helper.make_tensor_value_info("X", elem, dims)
    y = helper.make_tensor_value_info("Y", elem, dims)
    w = (1.0 + 0.25 * np.random.default_rng(7).uniform(-1, 1, c)).astype(dtype)
    b = (0.1 * np.random.default_rng(11).uniform(-1, 1, c)).astype(dtype)
    rm = (0.5 + 0.5 * np.random.default_rng(13).uniform(-1, 1, c)).astype(dtype)
    rv = (1.0 + 0.5 * np.random.default_rng(17).uniform(-1, 1, c)).astype(dtype)
    init = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")]
    if op in ("batch_norm_train", "batch_norm_eval"):
        init += [numpy_helper.from_array(rm, "M"), numpy_helper.from_array(rv, "V")]
        train = 1 if op == "batch_norm_train" else 0
        # Training mode must also output the updated running statistics.
        outs = ["Y", "RM", "RV"] if train else ["Y"]
        extra_outputs = [helper.make_tensor_value_info(o, elem, [c]) for o in outs[1:]]
        nodes = [
            helper.make_node(
                "BatchNormalization", ["X", "W", "B", "M", "V"], outs, epsilon=eps, momentum=0.9, training_mode=train
            )
        ]
        opset = 15
    elif op == "batch_norm_folded":
        # The folded map y = x·w + b as ONNX Runtime runs it in one pass: its
        # BatchNormalization in inference mode with mean 0 and variance
        # 1 - eps (so rstd is 1, to rounding). A Mul node then an Add node, the
        # literal graph, kept both and wrote and re-read a whole intermediate
        # (about twice as slow), which flattered us.
        zeros, ones = np.zeros(c, dtype), np.full(c, 1.0 - eps, dtype)
        init += [numpy_helper.from_array(zeros, "M"), numpy_helper.from_array(ones, "V")]
        nodes = [helper.make_node("BatchNormalization", ["X", "W", "B", "M", "V"], ["Y"], epsilon=eps)]
        opset = 15
    elif op == "group_norm":
        nodes = [helper.make_node("GroupNormalization", ["X", "W", "B"], ["Y"], epsilon=eps, num_groups=GROUPS)]
        opset = 21
    else:
        nodes = [helper.make_node("InstanceNormalization", ["X", "W", "B"], ["Y"], epsilon=eps)]
        opset = 17
    graph = helper.make_graph(nodes, op, [x], [y] + extra_outputs, initializer=init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    return ort.InferenceSession(model.SerializeToString(), ort_options(threads), providers=["CPUExecutionProvider"])


def bench_ort_chan(op, shape, threads, dtype, llc, budget, emit):
    import onnxruntime as ort

    if op == "group_norm" and dtype == np.float64:
        # Its GroupNormalization computes f64 data in f32 (NaN outputs at an
        # offset of 1e4): not the same work, so no row.
        raise ValueError("ONNX Runtime's GroupNormalization computes f64 in f32; not measured")
    itemsize = np.dtype(dtype).itemsize
    numel = math.prod(shape)
    # The inputs alone exceed twice the last-level cache.
    sets_n = max(2, math.ceil(2 * llc / (numel * itemsize)))
    sess = ort_chan_session(op, shape[1], 1e-5, threads, dtype)
    xs = [fill(shape, 1000 + i, 2.0, 0.5, dtype) for i in range(sets_n)]
    median = time_rotating([{"X": x} for x in xs], lambda f: sess.run(["Y"], f), *budget)
    emit(op, "fwd", "alloc", shape, median, chan_minimal_bytes(op, shape, itemsize))
    bindings = []
    for x in xs:
        io = sess.io_binding()
        io.bind_ortvalue_input("X", ort.OrtValue.ortvalue_from_numpy(x))
        y = np.empty_like(x)
        io.bind_output("Y", "cpu", 0, dtype, y.shape, y.ctypes.data)
        stats = [np.empty(shape[1], dtype) for _ in sess.get_outputs()[1:]]
        for out, buf in zip(sess.get_outputs()[1:], stats):
            io.bind_output(out.name, "cpu", 0, dtype, buf.shape, buf.ctypes.data)
        bindings.append((io, y, stats))
    median = time_rotating(bindings, lambda s: sess.run_with_iobinding(s[0]), *budget)
    emit(op, "fwd", "into", shape, median, chan_minimal_bytes(op, shape, itemsize))


def bench_torch_chan(op, shape, threads, dtype, llc, budget, emit):
    """PyTorch's functional call (its normal, allocating call) forward, and
    ATen's native backward kernels. A `_nhwc` op gets `shape` as (N, H, W, C)
    and runs on the (N, C, H, W) view of it with channels-last strides, which
    PyTorch's channels-last kernels take."""
    import torch

    torch.set_num_threads(threads)
    nhwc = op.endswith("_nhwc")
    base = op[: -len("_nhwc")] if nhwc else op
    # The (N, C, H, W) shape PyTorch sees.
    nchw = (shape[0], shape[-1]) + tuple(shape[1:-1]) if nhwc else tuple(shape)

    def tensor(values):
        t = torch.from_numpy(values)
        return t.permute(0, 3, 1, 2) if nhwc else t

    itemsize = np.dtype(dtype).itemsize
    numel, c = math.prod(nchw), nchw[1]
    sets_n = max(2, math.ceil(2 * llc / (numel * itemsize)))
    w = torch.from_numpy((1.0 + 0.25 * np.random.default_rng(7).uniform(-1, 1, c)).astype(dtype))
    b = torch.from_numpy((0.1 * np.random.default_rng(11).uniform(-1, 1, c)).astype(dtype))
    rm = torch.from_numpy((0.5 + 0.5 * np.random.default_rng(13).uniform(-1, 1, c)).astype(dtype))
    rv = torch.from_numpy((1.0 + 0.5 * np.random.default_rng(17).uniform(-1, 1, c)).astype(dtype))
    xs = [tensor(fill(shape, 1000 + i, 2.0, 0.5, dtype)) for i in range(sets_n)]
    F = torch.nn.functional
    fwd = {
        "batch_norm_train": lambda x: F.batch_norm(x, None, None, w, b, True, 0.1, 1e-5),
        "batch_norm_eval": lambda x: F.batch_norm(x, rm, rv, w, b, False, 0.1, 1e-5),
        "batch_norm_folded": lambda x: torch.addcmul(b.view(c, 1, 1), x, w.view(c, 1, 1)),
        "group_norm": lambda x: F.group_norm(x, GROUPS, w, b, 1e-5),
        "instance_norm": lambda x: F.instance_norm(x, None, None, w, b, True, 0.1, 1e-5),
    }[base]
    with torch.no_grad():
        median = time_rotating(xs, fwd, *budget)
    emit(op, "fwd", "alloc", shape, median, chan_minimal_bytes(base, nchw, itemsize))
    if base == "batch_norm_folded":
        return
    # Backward (dx, dweight, dbias): ATen's native backward kernels, the ones
    # autograd calls, given the statistics its forward saved.
    n = nchw[0]
    dys = [tensor(fill(shape, 2000 + i, 1.0, 0.0, dtype)) for i in range(sets_n)]
    mask = [True, True, True]
    aten = torch.ops.aten
    if base in ("batch_norm_train", "batch_norm_eval"):
        train = base == "batch_norm_train"
        saved = [aten.native_batch_norm(x, w, b, rm.clone(), rv.clone(), train, 0.1, 1e-5)[1:] for x in xs]
        bwd = lambda s: aten.native_batch_norm_backward(s[1], s[0], w, rm, rv, s[2][0], s[2][1], train, 1e-5, mask)
    elif base == "group_norm":
        hw = math.prod(nchw[2:])
        saved = [aten.native_group_norm(x, w, b, n, c, hw, GROUPS, 1e-5)[1:] for x in xs]
        bwd = lambda s: aten.native_group_norm_backward(s[1], s[0], s[2][0], s[2][1], w, n, c, hw, GROUPS, mask)
    else:
        # F.instance_norm is batch_norm on the (1, N*C, ...) view with the
        # affine parameters repeated N times; autograd then sums the repeated
        # parameter gradients back to C.
        flat = (1, n * c) + tuple(nchw[2:])
        wr, br = w.repeat(n), b.repeat(n)
        saved = [aten.native_batch_norm(x.view(flat), wr, br, None, None, True, 0.1, 1e-5)[1:] for x in xs]

        def bwd(s):
            dx, dwr, dbr = aten.native_batch_norm_backward(
                s[1].view(flat), s[0].view(flat), wr, None, None, s[2][0], s[2][1], True, 1e-5, mask
            )
            return dx.view(nchw), dwr.view(n, c).sum(0), dbr.view(n, c).sum(0)

    median = time_rotating(list(zip(xs, dys, saved)), bwd, *budget)
    emit(op, "bwd", "alloc", shape, median, chan_minimal_bytes(base, nchw, itemsize, "bwd"))


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
    return ort.InferenceSession(model.SerializeToString(), ort_options(threads), providers=["CPUExecutionProvider"])


def bench_ort(op, rows, n, threads, dtype, llc, budget, emit):
    import onnxruntime as ort

    itemsize = np.dtype(dtype).itemsize
    numel = rows * n
    sets_n = max(2, math.ceil(2 * llc / (numel * itemsize)))  # inputs exceed 2x the LLC
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
    sets_n = max(2, math.ceil(2 * llc / (numel * itemsize)))  # inputs exceed 2x the LLC
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
        median = time_rotating(sets, bwd, *budget)
    else:
        # PyTorch has no fused RMSNorm backward on CPU (`_fused_rms_norm_backward`
        # is CUDA only): its backward is autograd through the composite
        # forward. The forward that records the graph runs untimed; only
        # `backward` is timed.
        wg = w.clone().requires_grad_(True)

        def prepare(s):
            x = s[0].detach().requires_grad_(True)
            return F.rms_norm(x, (n,), wg, 1e-5), s[1]

        median = time_prepared(list(zip(xs, dys)), prepare, lambda p: p[0].backward(p[1]), *budget)
    emit(op, "bwd", "alloc", rows, n, median, itemsize)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", default=str(os.cpu_count() or 1), help="thread counts, e.g. 1,2")
    ap.add_argument("--out", required=True, help="JSON lines file to write")
    ap.add_argument("--quick", action="store_true", help="a short run")
    ap.add_argument("--dtype", default="f32", help="f32, f64 or f32,f64")
    ap.add_argument("--llc-mib", type=int, default=None, help="last-level cache size (default: from /sys)")
    ap.add_argument("--op", default=None, help="only ops whose name contains this (e.g. group)")
    args = ap.parse_args()
    thread_counts, dtypes = parse_options(ap, args)
    llc = (args.llc_mib << 20) if args.llc_mib else last_level_cache()
    budget = (5, 0.1) if args.quick else (15, 0.4)
    peers = [("onnxruntime", bench_ort)]
    chan_peers = [("onnxruntime", bench_ort_chan)]
    try:
        import torch  # noqa: F401

        peers.append(("torch", bench_torch))
        chan_peers.append(("torch", bench_torch_chan))
    except ImportError:
        print("peers.py: torch not installed; measuring onnxruntime only", file=sys.stderr)
    import onnxruntime

    rows_out = []
    for threads in thread_counts:
        copy_gbps = copy_bandwidth(threads)
        print(f"threads {threads}: copy_gbps {copy_gbps:.1f}", file=sys.stderr)
        for dname in dtypes:
            dtype = {"f32": np.float32, "f64": np.float64}[dname]

            def record(op, pas, variant, shape, median, nbytes, name):
                """One JSON line in `normkit bench`'s format, plus `impl`."""
                gbps = nbytes / median / 1e9
                row = {
                    "op": op, "pass": pas, "variant": variant, "dtype": dname,
                    "shape": shape, "threads": threads, "median_ms": median * 1e3,
                    "gbps": gbps, "copy_gbps": copy_gbps, "fraction": gbps / copy_gbps,
                    "impl": name,
                }
                if name == "onnxruntime":
                    row["version"] = onnxruntime.__version__
                print(json.dumps(row), file=sys.stderr)
                rows_out.append(row)

            for rows, n in ROW_SHAPES:
                for op in ["layer_norm", "rms_norm"]:
                    if args.op and args.op not in op:
                        continue
                    for name, fn in peers:

                        def emit(op, pas, variant, rows, n, median, itemsize, name=name):
                            nbytes = minimal_bytes(op, pas, rows, n, itemsize)
                            record(op, pas, variant, [rows, n], median, nbytes, name)

                        try:
                            fn(op, rows, n, threads, dtype, llc, budget, emit)
                        except Exception as e:  # a peer lacking an op is reported, not fatal
                            print(f"peers.py: {name} {op} {dname} [{rows},{n}]: {e}", file=sys.stderr)
            nchw_cases = [(shape, op, chan_peers) for shape in NCHW_SHAPES for op in CHAN_OPS]
            nhwc_cases = [(NHWC_SHAPE, op, [p for p in chan_peers if p[0] == "torch"]) for op in NHWC_OPS]
            for shape, op, op_peers in nchw_cases + nhwc_cases:
                if args.op and args.op not in op:
                    continue
                for name, fn in op_peers:

                    def emit_chan(op, pas, variant, shape, median, nbytes, name=name):
                        record(op, pas, variant, list(shape), median, nbytes, name)

                    try:
                        fn(op, shape, threads, dtype, llc, budget, emit_chan)
                    except Exception as e:  # a peer lacking an op is reported, not fatal
                        print(f"peers.py: {name} {op} {dname} {list(shape)}: {e}", file=sys.stderr)
    tmp = args.out + ".tmp"
    try:
        with open(tmp, "w") as f:
            for row in rows_out:
                f.write(json.dumps(row) + "\n")
        os.replace(tmp, args.out)
    except OSError as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        sys.exit(f"peers.py: cannot write {args.out}: {e.strerror}")


ALL_OPS = ["layer_norm", "rms_norm"] + CHAN_OPS + NHWC_OPS


def parse_options(ap, args):
    """The thread counts and dtypes asked for; bad options end the run (status
    2, through argparse) before anything is measured."""
    try:
        thread_counts = [int(t) for t in args.threads.split(",")]
    except ValueError:
        ap.error(f"--threads {args.threads!r}: expected positive integers, e.g. 1,2")
    if any(t < 1 for t in thread_counts):
        ap.error("--threads must be at least 1")
    dtypes = args.dtype.split(",")
    for d in dtypes:
        if d not in ("f32", "f64"):
            ap.error(f"unknown --dtype {d!r}: expected f32 or f64")
    if args.op and not any(args.op in op for op in ALL_OPS):
        ap.error(f"--op {args.op!r} matches no op (ops: {', '.join(ALL_OPS)})")
    out_dir = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(out_dir):
        ap.error(f"--out {args.out}: no directory {out_dir}")
    return thread_counts, dtypes


if __name__ == "__main__":
    main()
