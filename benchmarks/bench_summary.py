"""Benchmark: time and peak memory of summarising a 1 GB NWB file.

Writes a synthetic session of about 1 GB (100 units over one hour plus a 64-channel, 1 kHz LFP series), then
summarises it in a fresh process and prints the wall time and the peak resident memory of that process.

    python benchmarks/bench_summary.py [--lfp-channels 64] [--keep PATH]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from neuroseq.synthetic import SyntheticConfig, write_synthetic_nwb

MEASURE = r"""
import json, sys, time
start = time.perf_counter()
from neuroseq.nwb import summarize_nwb
imported = time.perf_counter()
summary = summarize_nwb(sys.argv[1])
done = time.perf_counter()
# VmHWM: this process's peak resident memory since exec (ru_maxrss would report the parent's peak if larger).
peak_mb = int(next(line for line in open("/proc/self/status") if line.startswith("VmHWM")).split()[1]) / 1024
print(json.dumps(dict(import_s=imported - start, summary_s=done - imported, peak_mb=peak_mb,
                      n_units=summary["n_units"], n_spikes=summary["n_spikes"], series=len(summary["series"]))))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfp-channels", type=int, default=64, help="channels of the LFP series (default: 64)")
    parser.add_argument("--keep", help="write the file here and keep it (default: a temporary folder)")
    args = parser.parse_args()

    config = SyntheticConfig(n_units=100, trials_per_condition=400, lfp_channels=args.lfp_channels, seed=11)
    folder = tempfile.mkdtemp()
    path = Path(args.keep) if args.keep else Path(folder) / "one_gigabyte.nwb"
    if not path.exists():
        start = time.perf_counter()
        write_synthetic_nwb(path, config)
        print(f"wrote {path} in {time.perf_counter() - start:.0f} s")
    size_gb = path.stat().st_size / 1e9
    result = json.loads(subprocess.run([sys.executable, "-c", MEASURE, str(path)], capture_output=True, text=True,
                                       check=True).stdout)
    print(f"file: {size_gb:.2f} GB, {result['n_units']} units, {result['n_spikes']:,} spikes, {result['series']} series")
    print(f"summary: {result['summary_s']:.2f} s (imports {result['import_s']:.2f} s more), "
          f"peak memory of the process {result['peak_mb']:.0f} MB")
    print(f"ratios: time {result['summary_s'] / 2.0:.2f} of the 2 s goal, memory {result['peak_mb'] / 300:.2f} of the 300 MB goal")
    if not args.keep:
        os.remove(path)


if __name__ == "__main__":
    main()
