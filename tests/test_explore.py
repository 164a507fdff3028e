"""`neuroseq explore` and the NWB layer on real files, the synthetic session, and every kind of bad input."""
import datetime
import json
import warnings

import h5py
import numpy as np
import pytest
from pynwb import NWBHDF5IO, NWBFile

from conftest import assert_one_line_error, run_neuroseq, shared_folder
from neuroseq.core import NeuroseqError
from neuroseq.nwb import (NWBSession, bin_spike_trains, bin_spike_trains_reference, format_summary, read_spike_trains,
                          read_trials, summarize_nwb, summarize_paths, trial_spike_counts, window_bin_edges)

START = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)


def write_nwb(path, units=None, trials=None):
    "Write a small NWB file with `units` (a list of spike-time lists) and `trials` (a list of dicts)."
    nwbfile = NWBFile(session_description="test file", identifier=path.stem, session_start_time=START)
    for times in units or []:
        nwbfile.add_unit(spike_times=times)
    extra_columns = [key for key in (trials or [{}])[0] if key not in ("start_time", "stop_time")]
    for column in extra_columns:
        nwbfile.add_trial_column(column, f"test column {column}")
    for row in trials or []:
        nwbfile.add_trial(**row)
    with NWBHDF5IO(path, "w") as io:
        io.write(nwbfile)
    return path


def regular_trials(n=6, duration=1.0, gap=1.0, label=True):
    return [dict(start_time=1 + index * (duration + gap), stop_time=1 + index * (duration + gap) + duration,
                 **({"stim": "AB"[index % 2]} if label else {})) for index in range(n)]


# Real data ------------------------------------------------------------------------------------------------------

def test_explore_dandi_000207(tmp_path):
    folder = shared_folder("data", "dandi000207")
    result = run_neuroseq("explore", folder, "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    totals = summary["totals"]
    assert totals["n_subjects"] == 1
    assert totals["n_units"] == 35
    assert totals["n_spikes"] == 214_278
    tables = summary["files"][0]["interval_tables"]
    assert {name: table["n_rows"] for name, table in tables.items()} == {
        "encoding_table": 90, "recognition_table": 180, "timediscrimination_table": 180}
    assert "214,278 spikes" in result.stdout
    assert (tmp_path / "firing_rates.png").stat().st_size > 10_000
    assert list(tmp_path.glob("overview_*.png"))


def test_explore_zhang_desimone_totals(tmp_path):
    folder = shared_folder("data", "zhang_desimone_it")
    result = run_neuroseq("explore", folder, "--out", tmp_path, "--align", "stimulus_onset_time",
                          "--window", "-0.2", "0.5", "--bin-ms", "25")
    assert result.returncode == 0, result.stderr
    totals = json.loads((tmp_path / "summary.json").read_text())["totals"]
    assert totals["n_files"] == 21
    assert totals["n_sessions"] == 21
    assert totals["n_units"] == 132
    assert totals["n_spikes"] == 603_003


def test_summary_json_fields(tmp_path):
    result = run_neuroseq("explore", "--out", tmp_path, "--no-figures")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    file = summary["files"][0]
    for key in ["path", "subject_id", "species", "session_id", "n_units", "n_spikes", "duration_s",
                "interval_tables", "series"]:
        assert key in file
    for key in ["n_files", "n_subjects", "n_sessions", "n_units", "n_spikes", "n_trials"]:
        assert key in summary["totals"]
    assert file["interval_tables"]["trials"]["n_rows"] == summary["totals"]["n_trials"] == 120
    assert "condition" in file["interval_tables"]["trials"]["columns"]


@pytest.mark.parametrize("table,align", [("encoding_table", "start_time"), ("recognition_table", "start_time")])
def test_binning_equals_reference_dandi(table, align):
    path = shared_folder("data", "dandi000207") / "sub-4_ses-4_ecephys+image.nwb"
    with NWBSession(path) as session:
        trains = read_spike_trains(session)
        _, _, align_times = read_trials(session, table, align)
    edges = window_bin_edges((-0.5, 1.5), 25)
    fast = bin_spike_trains(trains.times, trains.ends, align_times, edges)
    np.testing.assert_array_equal(fast, bin_spike_trains_reference(trains.times, trains.ends, align_times, edges))
    assert fast.sum() > 1000


def test_binning_equals_reference_zhang_desimone():
    for path in sorted(shared_folder("data", "zhang_desimone_it").glob("*.nwb"))[:5]:
        with NWBSession(path) as session:
            trains = read_spike_trains(session)
            _, _, align_times = read_trials(session, "trials", "stimulus_onset_time")
        # 1 ms bins on spike times stored as 1 ms bin centres: many spikes lie close to edges.
        edges = window_bin_edges((-0.5, 0.5), 1)
        fast = bin_spike_trains(trains.times, trains.ends, align_times, edges)
        np.testing.assert_array_equal(fast, bin_spike_trains_reference(trains.times, trains.ends, align_times, edges))
        assert fast.sum() == len(trains.times)  # every spike of this data set lies in a trial's 1 s window


# Bad input --------------------------------------------------------------------------------------------------------

def test_missing_path(tmp_path):
    result = run_neuroseq("explore", tmp_path / "nope.nwb", "--out", tmp_path / "out")
    assert_one_line_error(result, "nope.nwb", "no such file")
    assert not (tmp_path / "out" / "summary.json").exists()


def test_not_hdf5(tmp_path):
    (tmp_path / "fake.nwb").write_text("hello")
    assert_one_line_error(run_neuroseq("explore", tmp_path / "fake.nwb"), "fake.nwb", "not an HDF5 file")


def test_hdf5_not_nwb(tmp_path):
    with h5py.File(tmp_path / "plain.nwb", "w") as file:
        file["data"] = np.arange(3)
    assert_one_line_error(run_neuroseq("explore", tmp_path / "plain.nwb"), "plain.nwb", "not NWB")


def test_folder_with_bad_file_leaves_no_summary(tmp_path):
    (tmp_path / "data").mkdir()
    write_nwb(tmp_path / "data" / "good.nwb", units=[[1.0, 2.0]], trials=regular_trials())
    (tmp_path / "data" / "broken.nwb").write_text("truncated")
    result = run_neuroseq("explore", tmp_path / "data", "--out", tmp_path / "out")
    assert_one_line_error(result, "broken.nwb")
    assert not (tmp_path / "out" / "summary.json").exists()
    assert not list(tmp_path.rglob("*.tmp"))


def test_no_units_table(tmp_path):
    path = write_nwb(tmp_path / "no_units.nwb", trials=regular_trials())
    summary = summarize_nwb(path)
    assert summary["n_units"] == 0
    assert "no_units" in [note["code"] for note in summary["notes"]]
    with pytest.raises(NeuroseqError, match="no_units.nwb has no units table"):
        trial_spike_counts(path)


def test_no_interval_tables(tmp_path):
    path = write_nwb(tmp_path / "no_trials.nwb", units=[[0.5, 1.5, 2.5]])
    summary = summarize_nwb(path)
    assert summary["interval_tables"] == {}
    assert "no_interval_tables" in [note["code"] for note in summary["notes"]]
    with pytest.raises(NeuroseqError, match="no_trials.nwb has no interval table 'trials'"):
        trial_spike_counts(path)


def test_unit_with_zero_spikes(tmp_path):
    path = write_nwb(tmp_path / "silent.nwb", units=[[1.2, 1.3, 3.4], [], [1.5]], trials=regular_trials())
    counts = trial_spike_counts(path, window_s=(0, 1), bin_ms=100)
    assert counts.shape == (6, 10, 3)
    np.testing.assert_array_equal(counts.counts.sum(axis=(0, 1)), [3, 0, 1])
    assert "units_without_spikes" in [note["code"] for note in summarize_nwb(path)["notes"]]


def test_unsorted_spike_times_warn_and_sort(tmp_path):
    path = tmp_path / "unsorted.nwb"
    write_nwb(path, units=[[3.5, 1.2, 1.1], [1.5, 3.2]], trials=regular_trials())
    with pytest.warns(UserWarning, match="not in ascending order"):
        counts = trial_spike_counts(path, window_s=(0, 1), bin_ms=100)
    np.testing.assert_array_equal(counts.counts.sum(axis=(0, 1)), [3, 2])
    assert counts.counts[0, 1, 0] == 1  # 1.1 s, in the trial starting at 1 s
    assert counts.counts[0, 2, 0] == 1  # 1.2 s, in the next bin
    assert "unsorted_spike_times" in [note["code"] for note in summarize_nwb(path)["notes"]]


def test_nan_trial_times_dropped(tmp_path):
    trials = regular_trials()
    trials[2]["start_time"] = float("nan")
    path = write_nwb(tmp_path / "nan.nwb", units=[[1.2, 5.5, 9.1]], trials=trials)
    with pytest.warns(UserWarning, match="1 of 6 trials"):
        counts = trial_spike_counts(path, window_s=(0, 1), bin_ms=100)
    assert counts.shape[0] == 5
    assert 2 not in counts.labels["trial_index"].tolist()


def test_window_outside_recording(tmp_path):
    path = write_nwb(tmp_path / "short.nwb", units=[[1.2, 3.5]], trials=regular_trials())
    with pytest.raises(NeuroseqError, match="outside the recording"):
        trial_spike_counts(path, window_s=(100, 101))
    with pytest.warns(UserWarning, match="reach outside the recording"):
        counts = trial_spike_counts(path, window_s=(0, 2), bin_ms=100)
    assert counts.shape[0] == 5  # the last trial's 2 s window runs past the end of the recording


def test_bin_size_must_divide_window(tmp_path):
    path = write_nwb(tmp_path / "bins.nwb", units=[[1.2]], trials=regular_trials())
    with pytest.raises(NeuroseqError, match="bin size 30 ms does not divide"):
        trial_spike_counts(path, window_s=(0, 1), bin_ms=30)


def test_cli_bad_bin_size_is_one_line(tmp_path):
    path = write_nwb(tmp_path / "bins.nwb", units=[[1.2]], trials=regular_trials())
    result = run_neuroseq("explore", path, "--out", tmp_path / "out", "--bin-ms", "30")
    # explore still writes its summary; the overview figure is skipped with a warning that names the problem
    assert result.returncode == 0, result.stderr
    assert "does not divide" in result.stderr
    assert (tmp_path / "out" / "summary.json").exists()


def test_help_describes_options():
    result = run_neuroseq("explore", "--help")
    assert result.returncode == 0
    for fragment in ["--out", "seconds", "milliseconds", "synthetic session"]:
        assert fragment in result.stdout


@pytest.mark.parametrize("option, fragments", [
    ("--table", ["--table 'nosuch' not found", "the interval tables are trials"]),
    ("--align", ["--align 'nosuch' not found", "stimulus_onset_time"]),
    ("--label", ["--label 'nosuch' not found", "condition"]),
])
def test_unknown_figure_option_is_error(tmp_path, option, fragments):
    result = run_neuroseq("explore", option, "nosuch", "--out", tmp_path / "out")
    assert_one_line_error(result, *fragments)
    assert result.stdout == ""
    assert not (tmp_path / "out").exists()


def test_figure_option_missing_in_some_files(tmp_path):
    (tmp_path / "data").mkdir()
    write_nwb(tmp_path / "data" / "labelled.nwb", units=[[1.2, 3.5]], trials=regular_trials())
    unlabelled = write_nwb(tmp_path / "data" / "unlabelled.nwb", units=[[1.2, 3.5]], trials=regular_trials(label=False))
    result = run_neuroseq("explore", tmp_path / "data", "--out", tmp_path / "out", "--label", "stim")
    assert result.returncode == 0, result.stderr
    warnings_lines = [line for line in result.stderr.splitlines() if line.startswith("neuroseq: warning:")]
    assert len(warnings_lines) == 1, result.stderr
    assert warnings_lines[0].count(str(unlabelled)) == 1
    assert "no column 'stim'" in warnings_lines[0]
    assert (tmp_path / "out" / "overview_labelled.png").exists()
    assert not (tmp_path / "out" / "overview_unlabelled.png").exists()


def test_align_failure_warning_names_path_once(tmp_path):
    trials = regular_trials()
    for row in trials:
        row["cue_time"] = float("nan")
    path = write_nwb(tmp_path / "nan_cue.nwb", units=[[1.2, 3.5]], trials=trials)
    result = run_neuroseq("explore", path, "--out", tmp_path / "out", "--align", "cue_time")
    assert result.returncode == 0, result.stderr
    assert "no finite times" in result.stderr
    assert result.stderr.count(str(path)) == 1, result.stderr


def test_format_summary_synthetic_has_no_none():
    from neuroseq.synthetic import synthetic_session_path

    text = format_summary(summarize_paths([synthetic_session_path()]))
    assert "None" not in text
    assert "120 trials" in text.splitlines()[0]


def test_format_summary_without_subject(tmp_path):
    path = write_nwb(tmp_path / "no_subject.nwb", units=[[1.2, 3.5]], trials=regular_trials())
    text = format_summary(summarize_paths([path]))
    assert "None" not in text
    assert "subject   unknown" in text
    assert "session   unknown" in text


def test_format_summary_without_trials_table():
    folder = shared_folder("data", "dandi000207")
    headline = format_summary(summarize_paths([folder])).splitlines()[0]
    assert "0 trials" not in headline
    assert "no trials table but 3 other interval table(s) (450 rows)" in headline


def test_firing_rate_axis_has_labelled_ticks():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from neuroseq.plots import plot_firing_rates

    figure, axis = plt.subplots()
    plot_firing_rates(np.linspace(1.5, 9.0, 50), axis=axis)  # a range inside one decade
    figure.canvas.draw()
    low, high = axis.get_xlim()
    labels = [tick.get_text() for tick in axis.get_xticklabels() if tick.get_text() and low <= tick.get_position()[0] <= high]
    plt.close(figure)
    assert len(labels) >= 2, labels


def test_explore_trials_alias_of_table(tmp_path):
    result = run_neuroseq("explore", "--trials", "nosuch", "--out", tmp_path / "out")
    assert_one_line_error(result, "--table 'nosuch'")
    assert not (tmp_path / "out").exists()
