#!/usr/bin/env python3
"""Markdown table of a `normkit bench --json` run beside `bench/peers.py`'s
rows from the same session, with the issue's bars ("Performance", Done when)
marked per row.

    python3 bench/report.py ours.json peers.json > table.md
    python3 bench/report.py --runs ours1.json peers1.json ours2.json peers2.json ... > medians.md

Only the standard library is needed. Rows of the size sweep are left out (the
bench prints them with `sweep`). `fraction` is effective GB/s over the copy
bandwidth measured in the same run, and each bar is judged on the `into` row
(the kernel writing into caller buffers); "x faster" is a peer's median time
over ours for the same op, pass, variant, shape and threads (above 1: ours is
faster), for the allocating call and for the `into` call. With `--runs`, every
figure is the median over the runs (see `report`).
"""

import json
import statistics
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
# Minimal speed-up over PyTorch CPU on every op, shape and pass it has.
TORCH_BAR = 1.5


def peer_bar(impl, op, pas):
    """The issue's minimal speed-up over `impl` on this row, or None."""
    if impl == "onnxruntime":
        return ORT_BAR.get(op) if pas == "fwd" else None
    return TORCH_BAR if impl == "torch" else None


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


def indexed(path, rows, with_impl):
    """`rows` by key (and `impl` for peers); a key seen twice ends the run (a
    file of several runs concatenated would otherwise count one of them)."""
    out = {}
    for r in rows:
        k = (key(r), r["impl"]) if with_impl else key(r)
        if k in out:
            sys.exit(f"report.py: {path}: two rows for {k}")
        out[k] = r
    return out


def load_run(ours_path, peers_path):
    """One run: our rows (the size sweep left out) and the peers' rows, by key."""
    ours = indexed(ours_path, [r for r in load(ours_path) if "sweep" not in r], False)
    peers = indexed(peers_path, load(peers_path), True) if peers_path else {}
    return ours, peers


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, spec=".2f"):
    return "-" if x is None else format(x, spec)


def main():
    args = sys.argv[1:]
    if args[:1] == ["--runs"]:
        pairs = args[1:]
        if len(pairs) < 2 or len(pairs) % 2:
            sys.exit("usage: report.py --runs OURS1.json PEERS1.json OURS2.json PEERS2.json ...")
        runs = [load_run(pairs[i], pairs[i + 1]) for i in range(0, len(pairs), 2)]
    elif len(args) in (1, 2):
        runs = [load_run(args[0], args[1] if len(args) > 1 else None)]
    else:
        sys.exit("usage: report.py OURS.json [PEERS.json] | report.py --runs OURS1 PEERS1 OURS2 PEERS2 ...")
    report(runs)


def report(runs):
    """One table row per (op, pass, dtype, shape, threads): with one run, its
    figures; with several, the median over the runs of each figure (each run's
    fraction against its own copy bandwidth), the peers' median time over ours
    (ratios of medians: peers and ours run in separate processes minutes apart,
    so per-run ratios pair unrelated moments of a noisy host), and in how many
    runs each bar was met."""
    n = len(runs)
    for i, (ours, _) in enumerate(runs):
        copy = sorted({(r["threads"], round(r["copy_gbps"], 1)) for r in ours.values()})
        name = "this run" if n == 1 else f"run {i + 1}"
        print(f"copy_gbps in {name}: " + ", ".join(f"{g} GB/s with {t} thread(s)" for t, g in copy))
    print()
    impls = sorted({impl for _, peers in runs for (_, impl) in peers})
    lines = []
    for k in runs[0][0]:
        line = k[:2] + k[3:]  # without the variant
        if line not in lines:
            lines.append(line)
    head = "| op | pass | shape | thr | into ms | into fraction | alloc ms | alloc fraction | bar |"
    for impl in impls:
        head += f" {impl} ms alloc / into | ours x faster alloc / into |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    needs = []
    for op, pas, dtype, shape, threads in lines:
        def ours(variant, field):
            return [run[0].get((op, pas, variant, dtype, shape, threads), {}).get(field) for run in runs]

        def theirs(variant, impl):
            return [run[1].get(((op, pas, variant, dtype, shape, threads), impl), {}).get("median_ms") for run in runs]

        into_ms, alloc_ms = median(ours("into", "median_ms")), median(ours("alloc", "median_ms"))
        into_fr, alloc_fr = ours("into", "fraction"), ours("alloc", "fraction")
        # The bar is judged on the `into` row (the kernel itself).
        judged = [i if i is not None else a for i, a in zip(into_fr, alloc_fr)]
        fb = fraction_bar(op, pas)
        mark = "" if fb is None else verdict(fb, [f >= fb for f in judged if f is not None])
        row = (
            f"| {op} | {pas} | [{','.join(str(d) for d in shape)}] | {threads} | {fmt(into_ms)} | "
            f"{fmt(median(into_fr))} | {fmt(alloc_ms)} | {fmt(median(alloc_fr))} | {mark} |"
        )
        for impl in impls:
            pa, pi = theirs("alloc", impl), theirs("into", impl)
            ratio = [median(p) / o if median(p) and o else None for p, o in ((pa, alloc_ms), (pi, into_ms))]
            text = " / ".join(fmt(x) for x in ratio)
            ob = peer_bar(impl, op, pas)
            if ob is not None and ratio[0] is not None:
                per_run = [p / o >= ob for p, o in zip(pa, ours("alloc", "median_ms")) if p and o]
                met = "met" if ratio[0] >= ob else "missed"
                text += f" (bar {ob}x on alloc: {met if n == 1 else per_run_text(met, per_run)})"
            row += f" {fmt(median(pa))} / {fmt(median(pi))} | {text} |"
            if ob is not None and ratio[0] is not None and ratio[0] < ob:
                needs.append(needed_fraction(op, pas, shape, threads, impl, ob, median(pa), alloc_ms, alloc_fr))
        print(row)
    if needs:
        print()
        print("Rows below a peer's bar, and the fraction of copy bandwidth ours would need on the")
        print("allocating call to meet it (the bar times the peer's own fraction), highest first:")
        print()
        for need, text in sorted(needs, reverse=True):
            print(f"- {text}: needs {need:.2f}")


def needed_fraction(op, pas, shape, threads, impl, bar, peer_ms, ours_ms, ours_fraction):
    """`(need, text)` for a row below a peer's bar: the peer's fraction of copy
    bandwidth is ours scaled by our time over theirs (the same bytes), and
    meeting the bar would take `bar` times that. Above about 1, meeting it
    means moving the bytes faster than the machine's copy does."""
    peer_fraction = median(ours_fraction) * ours_ms / peer_ms
    dims = ",".join(str(d) for d in shape)
    text = (
        f"{op} {pas} [{dims}] {threads} thread(s): {impl} {bar}x bar, now {peer_ms / ours_ms:.2f}x; "
        f"{impl} at {peer_fraction:.2f} of copy bandwidth, ours {median(ours_fraction):.2f}"
    )
    return bar * peer_fraction, text


def verdict(bar, met):
    """`bar: met`/`missed` for one run; `bar: met in k of n` for several."""
    if len(met) == 1:
        return f"{bar}: {'met' if met[0] else 'missed'}"
    return f"{bar}: met in {sum(met)} of {len(met)}"


def per_run_text(met, per_run):
    """A peer's bar (`met`/`missed`) on the ratio of medians, and per run."""
    return f"{met} on the medians, in {sum(per_run)} of {len(per_run)} runs"


if __name__ == "__main__":
    main()
