#!/usr/bin/env python3
"""Benchmark `normkit scale fit-transform` against pandas + scikit-learn.

Makes a CSV of --size-mib MiB (20 numeric columns with some missing values and
one text column) and its Parquet twin (same rows), then times, in the same run,
on each file:

  normkit scale fit-transform IN -o OUT --scaler standard|robust
  python: pandas.read_csv/read_parquet, StandardScaler/RobustScaler().fit_transform
          on the numeric columns, to_csv/to_parquet

each under /usr/bin/time -v (wall time and peak resident memory). For Parquet
it also reports the largest difference between normkit's and scikit-learn's
outputs. Prints a Markdown table and writes it with the raw numbers to
DIR/results.json.

Needs: pandas, scikit-learn, pyarrow (pip install pandas scikit-learn pyarrow),
GNU time (/usr/bin/time), and a release build (cargo build --release -p normkit-cli).

  python3 bench/scale_bench.py --size-mib 1024 --normkit target/release/normkit
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

N_NUM = 20
MISSING = 0.02  # fraction of missing values in the columns that have some


def make_chunk(rng, rows, start):
    """One block of rows: 20 numeric columns of assorted shapes, rounded as real
    measurements are, every other column with 2% missing, plus a text column."""
    cols = {}
    for j in range(N_NUM):
        kind = j % 5
        if kind == 0:
            x = rng.normal(100.0 * (j + 1), 15.0, rows).round(3)
        elif kind == 1:
            x = rng.lognormal(3.0, 1.0, rows).round(4)
        elif kind == 2:
            x = rng.uniform(-1.0, 1.0, rows).round(6)
        elif kind == 3:
            x = rng.integers(0, 10_000, rows).astype(np.float64)
        else:
            x = (1e6 + rng.normal(0.0, 1.0, rows)).round(3)
        mask = None
        if j % 2 == 1:
            mask = rng.random(rows) < MISSING
        cols[f"x{j:02d}"] = pa.array(x, mask=mask)
    ids = np.arange(start, start + rows)
    cols["label"] = pa.array(np.char.add("row", ids.astype(str)))
    return pa.table(cols)


def make_files(directory, size_mib, seed):
    csv_path = os.path.join(directory, f"data_{size_mib}mib.csv")
    pq_path = os.path.join(directory, f"data_{size_mib}mib.parquet")
    if os.path.exists(csv_path) and os.path.exists(pq_path):
        return csv_path, pq_path
    rng = np.random.default_rng(seed)
    target = size_mib << 20
    rows_per_chunk = 200_000
    start = 0
    first = make_chunk(rng, 1, 0)
    with open(csv_path + ".tmp", "wb") as fcsv:
        csv_writer = pacsv.CSVWriter(fcsv, first.schema)
        pq_writer = pq.ParquetWriter(pq_path + ".tmp", first.schema, compression="snappy")
        while fcsv.tell() < target:
            t = make_chunk(rng, rows_per_chunk, start)
            start += rows_per_chunk
            csv_writer.write_table(t)
            pq_writer.write_table(t)
        csv_writer.close()
        pq_writer.close()
    os.replace(csv_path + ".tmp", csv_path)
    os.replace(pq_path + ".tmp", pq_path)
    return csv_path, pq_path


PANDAS = r"""
import sys, pandas as pd
from sklearn.preprocessing import StandardScaler, RobustScaler
src, dst, scaler = sys.argv[1:4]
df = pd.read_csv(src) if src.endswith(".csv") else pd.read_parquet(src)
num = df.select_dtypes(include="number").columns
s = StandardScaler() if scaler == "standard" else RobustScaler()
df[num] = s.fit_transform(df[num])
if dst.endswith(".csv"):
    df.to_csv(dst, index=False)
else:
    df.to_parquet(dst, index=False)
"""


def timed(cmd):
    """Runs cmd under GNU time; returns (wall seconds, peak RSS MiB)."""
    t0 = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-v"] + cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-2000:]}")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
    return wall, (int(rss.group(1)) / 1024 if rss else float("nan"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--dir", default="/tmp/normkit-scale-bench")
    ap.add_argument("--normkit", default="target/release/normkit")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-peers", action="store_true", help="time normkit only")
    ap.add_argument("--formats", default="csv,parquet", help="which files to time (csv, parquet or both)")
    args = ap.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    t0 = time.perf_counter()
    csv_path, pq_path = make_files(args.dir, args.size_mib, args.seed)
    print(f"data: {csv_path} ({os.path.getsize(csv_path) / 2**20:.0f} MiB), "
          f"{pq_path} ({os.path.getsize(pq_path) / 2**20:.0f} MiB), ready in {time.perf_counter() - t0:.0f} s",
          flush=True)
    rows = []
    for path, ext in [(csv_path, "csv"), (pq_path, "parquet")]:
        if ext not in args.formats.split(","):
            continue
        for scaler in ["standard", "robust"]:
            out_nk = os.path.join(args.dir, f"out_normkit_{scaler}.{ext}")
            out_pd = os.path.join(args.dir, f"out_pandas_{scaler}.{ext}")
            nk = timed([args.normkit, "scale", "fit-transform", path, "-o", out_nk, "--scaler", scaler, "-q"])
            print(f"{ext} {scaler} normkit: {nk[0]:.1f} s, {nk[1]:.0f} MiB", flush=True)
            row = {"format": ext, "scaler": scaler, "normkit_s": nk[0], "normkit_mib": nk[1]}
            if not args.skip_peers:
                pdr = timed([sys.executable, "-c", PANDAS, path, out_pd, scaler])
                print(f"{ext} {scaler} pandas+sklearn: {pdr[0]:.1f} s, {pdr[1]:.0f} MiB", flush=True)
                row.update(pandas_s=pdr[0], pandas_mib=pdr[1], speedup=pdr[0] / nk[0])
                if ext == "parquet":
                    a = pq.read_table(out_nk).to_pandas()
                    b = pq.read_table(out_pd).to_pandas()
                    num = [c for c in a.columns if c != "label"]
                    row["max_abs_diff"] = float(np.nanmax(np.abs(a[num].to_numpy() - b[num].to_numpy())))
                os.remove(out_pd)
            os.remove(out_nk)
            rows.append(row)
    print()
    print(f"| file | scaler | normkit time | normkit peak RSS | pandas+sklearn time | pandas+sklearn peak RSS | speed-up |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        peer = (f"{r['pandas_s']:.1f} s | {r['pandas_mib']:.0f} MiB | {r['speedup']:.1f}x"
                if "pandas_s" in r else "- | - | -")
        print(f"| {r['format']} | {r['scaler']} | {r['normkit_s']:.1f} s | {r['normkit_mib']:.0f} MiB | {peer} |")
    for r in rows:
        if "max_abs_diff" in r:
            print(f"parquet {r['scaler']}: max |normkit - sklearn| = {r['max_abs_diff']:.3g}")
    with open(os.path.join(args.dir, "results.json"), "w") as f:
        json.dump({"size_mib": args.size_mib, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
