#!/usr/bin/env python3
"""Markdown table of a `normkit bench --json` run beside `bench/peers.py`'s
rows from the same session, with the issue's bars ("Performance", Done when)
marked per row.

    python3 bench/report.py ours.json peers.json > table.md

Only the standard library is needed. Rows of the size sweep are left out (the
bench prints them with `sweep`). `fraction` is effective GB/s over the copy
bandwidth measured in the same run, and each bar is judged on the `into` row
(the kernel writing into caller buffers); "x faster" is a peer's median time
over ours for the same op, pass, variant, shape and threads (above 1: ours is
faster), for the allocating call and for the `into` call.
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
    """The JSON lines of `path`; a file that cannot be read or parsed ends the
    run with a message naming it (and the line)."""
    try:
        with open(path) as f:
            lines = list(f)
    except OSError as e:
        sys.exit(f"report.py: cannot read {path}: {e.strerror}")
    rows = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            sys.exit(f"report.py: {path}:{i}: not a JSON line ({e.msg})")
    return rows


def key(r):
    return (r["op"], r["pass"], r["variant"], r["dtype"], tuple(r["shape"]), r["threads"])


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: report.py OURS.json [PEERS.json]")
    ours = [r for r in load(sys.argv[1]) if "sweep" not in r]
    peers = {}
    for r in load(sys.argv[2]) if len(sys.argv) > 2 else []:
        peers[(key(r), r["impl"])] = r
    impls = sorted({impl for (_, impl) in peers})
    copy = sorted({(r["threads"], round(r["copy_gbps"], 1)) for r in ours})
    print("copy_gbps in this run: " + ", ".join(f"{g} GB/s with {t} thread(s)" for t, g in copy))
    print()
    # One line per (op, pass, dtype, shape, threads): the `into` and `alloc` rows side by side.
    def cell(x, f):
        return f(x) if x else "-"

    lines = {}
    for r in ours:
        k = (r["op"], r["pass"], r["dtype"], tuple(r["shape"]), r["threads"])
        lines.setdefault(k, {})[r["variant"]] = r
    head = "| op | pass | shape | thr | into ms | into fraction | alloc ms | alloc fraction | bar |"
    for impl in impls:
        head += f" {impl} ms alloc / into | ours x faster alloc / into |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for (op, pas, dtype, shape, threads), v in lines.items():
        into, alloc = v.get("into"), v.get("alloc")
        fb = fraction_bar(op, pas)
        # The bar is judged on the `into` row (the kernel; `alloc` adds the
        # cost of fresh output pages, which the README discusses).
        judged = (into or alloc)["fraction"]
        mark = "" if fb is None else f"{fb}: {'met' if judged >= fb else 'missed'}"
        row = (
            f"| {op} | {pas} | [{','.join(str(d) for d in shape)}] | {threads} | "
            f"{cell(into, lambda x: format(x['median_ms'], '.2f'))} | "
            f"{cell(into, lambda x: format(x['fraction'], '.2f'))} | "
            f"{cell(alloc, lambda x: format(x['median_ms'], '.2f'))} | "
            f"{cell(alloc, lambda x: format(x['fraction'], '.2f'))} | {mark} |"
        )
        for impl in impls:
            pa = peers.get(((op, pas, "alloc", dtype, shape, threads), impl))
            pi = peers.get(((op, pas, "into", dtype, shape, threads), impl))
            ms = " / ".join(format(p["median_ms"], ".2f") if p else "-" for p in (pa, pi))
            ratios = [p["median_ms"] / o["median_ms"] if p and o else None for p, o in ((pa, alloc), (pi, into))]
            text = " / ".join(format(x, ".2f") if x else "-" for x in ratios)
            ob = ORT_BAR.get(op) if impl == "onnxruntime" and pas == "fwd" else None
            if ob is not None and ratios[0] is not None:
                text += f" (bar {ob}x on alloc: {'met' if ratios[0] >= ob else 'missed'})"
            row += f" {ms} | {text} |"
        print(row)


if __name__ == "__main__":
    main()
