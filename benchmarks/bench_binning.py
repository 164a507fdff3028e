"""Benchmark: vectorised spike binning against the per-unit, per-trial np.histogram reference.

Builds a synthetic session of 100 units over one hour (2,400 trials), bins every trial at 10 ms with both
implementations, checks that the counts are identical, and prints the speed-up.

    python benchmarks/bench_binning.py [--units 100] [--hours 1]
"""
import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from neuroseq.nwb import (NWBSession, bin_spike_trains, bin_spike_trains_reference, read_spike_trains, read_trials,
                          window_bin_edges)
from neuroseq.synthetic import SyntheticConfig, write_synthetic_nwb


def best_time(function, repeats):
    "Return the fastest wall time of `repeats` calls of `function`, and its last result."
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return min(times), result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", type=int, default=100, help="number of units (default: 100)")
    parser.add_argument("--hours", type=float, default=1.0, help="session length in hours (default: 1)")
    args = parser.parse_args()

    trials_per_condition = int(round(args.hours * 3600 / 1.5 / 6))  # 1 s trials with 0.5 s between them
    config = SyntheticConfig(n_units=args.units, trials_per_condition=trials_per_condition, seed=7)
    with tempfile.TemporaryDirectory() as folder:
        path = write_synthetic_nwb(Path(folder) / "bench.nwb", config)
        with NWBSession(path) as session:
            trains = read_spike_trains(session)
            _, _, align_times = read_trials(session, "trials", "start_time")
    edges = window_bin_edges((-0.25, 1.0), 10)
    print(f"session: {trains.n_units} units, {len(trains.times):,} spikes, {len(align_times)} trials, "
          f"{config.n_trials * 1.5 / 3600:.2f} h; window -0.25 to 1 s in 10 ms bins")

    fast_s, fast = best_time(lambda: bin_spike_trains(trains.times, trains.ends, align_times, edges), 5)
    reference_s, reference = best_time(lambda: bin_spike_trains_reference(trains.times, trains.ends, align_times, edges), 1)
    identical = np.array_equal(fast, reference)
    print(f"vectorised: {fast_s:.3f} s   reference (np.histogram per unit and trial): {reference_s:.3f} s")
    print(f"identical counts: {identical}")
    print(f"speed-up: {reference_s / fast_s:.1f}x")
    if not identical:
        raise SystemExit("the vectorised counts differ from the reference")


if __name__ == "__main__":
    main()
