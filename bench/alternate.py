#!/usr/bin/env python3
"""Compare two builds of `normkit` by running their benchmarks in turn.

This host is noisy: the same row moves by 10-25% between runs minutes apart,
so a kernel change is measured by alternating the two binaries (A B, B A,
A B, ...) and comparing, row by row, the medians over the rounds and how
often B was the faster. This is how the README's "alternating rounds"
figures were taken.

    cargo build --release -p normkit-cli && cp target/release/normkit /tmp/normkit-a
    # ... change the code ...
    cargo build --release -p normkit-cli && cp target/release/normkit /tmp/normkit-b
    python3 bench/alternate.py /tmp/normkit-a /tmp/normkit-b --rounds 8 --op layer_norm --threads 1

Each round runs `normkit bench --quick --no-sweep --json` with the given
`--op` filter and thread count; rows are the `into` variant unless
`--variant` says otherwise. Needs only the Python standard library.
"""

import argparse
import json
import statistics
import subprocess
import sys


def run_bench(binary, op, threads):
    """The JSON rows of one `normkit bench` run (the copy-bandwidth line skipped)."""
    cmd = [binary, "bench", "--threads", threads, "--op", op, "--quick", "--no-sweep", "--json"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except OSError as e:
        sys.exit(f"cannot run {binary}: {e}")
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr}")
    rows = []
    for line in done.stdout.splitlines():
        if line.startswith("{"):
            row = json.loads(line)
            if "median_ms" in row:
                rows.append(row)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", help="the baseline normkit binary")
    parser.add_argument("b", help="the changed normkit binary")
    parser.add_argument("--rounds", type=int, default=6, help="rounds, each running both binaries (default 6)")
    parser.add_argument("--op", default="", help="normkit bench --op filter (default: every op)")
    parser.add_argument("--threads", default="1", help="thread counts, e.g. 1,2 (default 1)")
    parser.add_argument("--variant", default="into", choices=["into", "alloc"], help="rows to compare")
    parser.add_argument("--pass", dest="passes", default="fwd,bwd", help="passes to compare (default fwd,bwd)")
    args = parser.parse_args()
    if args.rounds < 1:
        sys.exit("--rounds must be at least 1")
    passes = set(args.passes.split(","))

    times = {}  # (op, pass, shape, threads) -> {"A": [ms...], "B": [ms...]}
    for r in range(args.rounds):
        order = [("A", args.a), ("B", args.b)]
        if r % 2 == 1:
            order.reverse()
        for name, binary in order:
            for row in run_bench(binary, args.op, args.threads):
                if row["variant"] != args.variant or row["pass"] not in passes:
                    continue
                key = (row["op"], row["pass"], tuple(row["shape"]), row["threads"])
                times.setdefault(key, {"A": [], "B": []})[name].append(row["median_ms"])
        print(f"round {r + 1} of {args.rounds} done", file=sys.stderr)

    print(f"{'op':24} pass {'shape':16} thr {'A ms':>8} {'B ms':>8}  B/A    B faster")
    for (op, pas, shape, thr), t in sorted(times.items()):
        a, b = t["A"], t["B"]
        if not a or not b:
            continue
        ma, mb = statistics.median(a), statistics.median(b)
        wins = sum(1 for x, y in zip(a, b) if y < x)
        shape_s = str(list(shape)).replace(" ", "")
        print(f"{op:24} {pas:4} {shape_s:16} {thr:3} {ma:8.3f} {mb:8.3f}  {mb / ma:.3f}  {wins} of {min(len(a), len(b))}")


if __name__ == "__main__":
    main()
