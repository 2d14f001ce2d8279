#!/usr/bin/env python3
"""Markdown table of a `normkit bench --json` run beside `bench/peers.py`'s
rows from the same session, with the issue's bars ("Performance", Done when)
marked per row.

    python3 bench/report.py ours.json peers.json > table.md

Only the standard library is needed. Rows of the size sweep are left out (the
bench prints them with `sweep`). `fraction` is effective GB/s over the copy
bandwidth measured in the same run; `vs ORT` is ONNX Runtime's median time
over ours for the same op, pass, variant, shape and threads (above 1: ours is
faster).
"""

import json
import sys

# Minimal fraction of copy bandwidth per (op, pass), from the issue.
FRACTION_BAR = {
    ("layer_norm", "fwd"): 0.8,
    ("rms_norm", "fwd"): 0.8,
    ("layer_norm", "bwd"): 0.7,
    ("rms_norm", "bwd"): 0.7,
    ("batch_norm_eval", "fwd"): 0.8,
    ("batch_norm_folded", "fwd"): 0.8,
    ("batch_norm_train", "fwd"): 0.55,
    ("group_norm", "fwd"): 0.75,
    ("instance_norm", "fwd"): 0.75,
}
# Minimal speed-up over ONNX Runtime per op (forward), from the issue.
ORT_BAR = {"layer_norm": 1.4, "group_norm": 3.0}


def base_op(op):
    return op[: -len("_nhwc")] if op.endswith("_nhwc") else op


def fraction_bar(op, pas):
    if pas == "bwd":
        return FRACTION_BAR.get((base_op(op), pas), 0.5)
    return FRACTION_BAR.get((base_op(op), pas))


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def key(r):
    return (r["op"], r["pass"], r["variant"], r["dtype"], tuple(r["shape"]), r["threads"])


def main():
    ours = [r for r in load(sys.argv[1]) if "sweep" not in r]
    peers = {}
    for r in load(sys.argv[2]) if len(sys.argv) > 2 else []:
        peers[(key(r), r["impl"])] = r
    copy = sorted({(r["threads"], round(r["copy_gbps"], 1)) for r in ours})
    print("copy_gbps per thread count (this run): " + ", ".join(f"{t} thread(s): {g}" for t, g in copy))
    print()
    print("| op | pass | variant | shape | thr | ms | GB/s | fraction | bar | ORT ms | vs ORT | bar |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in ours:
        fb = fraction_bar(r["op"], r["pass"])
        fmark = "" if fb is None else f"{fb} {'met' if r['fraction'] >= fb else 'MISSED'}"
        ort = peers.get((key(r), "onnxruntime"))
        ort_ms = f"{ort['median_ms']:.2f}" if ort else "-"
        speed = f"{ort['median_ms'] / r['median_ms']:.2f}x" if ort else "-"
        ob = ORT_BAR.get(r["op"]) if r["pass"] == "fwd" else None
        omark = "" if ob is None or not ort else f"{ob}x {'met' if ort['median_ms'] / r['median_ms'] >= ob else 'MISSED'}"
        shape = "[" + ",".join(str(d) for d in r["shape"]) + "]"
        print(
            f"| {r['op']} | {r['pass']} | {r['variant']} | {shape} | {r['threads']} | {r['median_ms']:.2f} | "
            f"{r['gbps']:.1f} | {r['fraction']:.2f} | {fmark} | {ort_ms} | {speed} | {omark} |"
        )


if __name__ == "__main__":
    main()
