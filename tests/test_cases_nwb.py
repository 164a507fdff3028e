"""Every NWB and course case in ../shared/cases, checked against the behaviour its README expects.

A missing case folder fails the test: the cases are part of the suite, not optional extras.
"""
import shutil
import subprocess

import nbformat
import numpy as np
import pytest

from conftest import REPO, run_neuroseq, shared_folder
from neuroseq.core import NeuroseqError
from neuroseq.nwb import summarize_nwb, trial_series_windows, trial_spike_counts


def case(folder, name):
    path = shared_folder("cases", folder) / name
    if not path.exists():
        pytest.fail(f"{path} is missing")
    return path


def note_codes(path):
    return [note["code"] for note in summarize_nwb(path)["notes"]]


def test_01_spike_times_index_trap(tmp_path):
    path = case("01-spike-times-index-trap", "units_index_trap.nwb")
    summary = summarize_nwb(path)
    assert (summary["n_units"], summary["n_spikes"]) == (5, 545)
    assert summary["interval_tables"]["trials"]["columns"] == ["start_time", "stop_time", "stim"]
    counts = trial_spike_counts(path, table="trials", align="start_time", window_s=(0, 2), bin_ms=100)
    assert counts.shape == (40, 20, 5)
    assert counts.counts.sum() == 131
    np.testing.assert_array_equal(counts.counts.sum(axis=(0, 1)), [29, 18, 26, 22, 36])
    is_a = (counts.labels["stim"] == "A").to_numpy()
    np.testing.assert_array_equal(counts.counts[is_a].sum(axis=(0, 1)), [22, 9, 21, 11, 26])
    np.testing.assert_array_equal(counts.counts[~is_a].sum(axis=(0, 1)), [7, 9, 5, 11, 10])
    result = run_neuroseq("explore", path, "--out", tmp_path)
    assert "5 units" in result.stdout and "545 spikes" in result.stdout


def test_02_units_in_processing_module(tmp_path):
    path = case("02-units-in-processing-module", "units_in_processing.nwb")
    summary = summarize_nwb(path)
    assert summary["units_path"] == "processing/ecephys/units"
    assert (summary["n_units"], summary["n_spikes"]) == (4, 200)
    assert "units_not_at_root" in note_codes(path)
    counts = trial_spike_counts(path, window_s=(0, 1), bin_ms=50)
    assert counts.shape == (20, 20, 4)
    assert counts.counts.sum() == 31
    result = run_neuroseq("explore", path)
    assert result.returncode == 0, result.stderr
    assert "Units table at processing/ecephys/units: 4 units, 200 spikes" in result.stdout


def test_04_trial_relative_spike_times():
    path = case("04-trial-relative-spike-times", "trial_relative.nwb")
    codes = note_codes(path)
    for code in ["zero_duration_trials", "unsorted_spike_times", "negative_spike_times"]:
        assert code in codes
    with pytest.raises(NeuroseqError) as error:
        trial_spike_counts(path, table="trials", align="start_time", window_s=(0, 1))
    message = str(error.value)
    assert "trial_relative.nwb" in message and "'trials'" in message
    assert "zero duration" in message and "trial-relative" in message


def test_04_relative_times_siblings(tmp_path):
    "Trials that all align at one non-zero time are refused the same way."
    from test_explore import write_nwb
    path = write_nwb(tmp_path / "same_time.nwb", units=[[0.1, 0.2, 5.0]],
                     trials=[dict(start_time=2.0, stop_time=3.0 + index) for index in range(4)])
    with pytest.raises(NeuroseqError, match="align at the same time"):
        trial_spike_counts(path, window_s=(0, 1))


def test_05_spike_times_in_samples():
    path = case("05-spike-times-in-samples", "spikes_in_samples.nwb")
    notes = summarize_nwb(path)["notes"]
    sample_note = [note["message"] for note in notes if note["code"] == "spike_times_look_like_samples"]
    assert sample_note and "/ 30000" in sample_note[0] and "299.5" in sample_note[0]
    with pytest.raises(NeuroseqError, match="no spikes fall in any trial window"):
        trial_spike_counts(path, window_s=(0, 0.5), bin_ms=100)
    rescaled = trial_spike_counts(path, window_s=(0, 0.5), bin_ms=100, spike_times_sampling_rate=30000)
    assert rescaled.counts.sum() == 329
    np.testing.assert_array_equal(rescaled.counts.sum(axis=(0, 1)), [108, 112, 109])


def test_07_timestamps_vs_rate(tmp_path):
    path = case("07-timestamps-vs-rate", "timestamps_vs_rate.nwb")
    by_rate = trial_series_windows(path, "eeg_rate", table="trials", align="start_time", window_s=(0, 1))
    assert by_rate.data.shape == (12, 250, 3)
    np.testing.assert_allclose(by_rate.data[:, 0, 0], 3.0 + 5.0 * np.arange(12), atol=1e-4)
    with pytest.warns(UserWarning, match=r"trial indices \[6, 7\]"):
        by_timestamps = trial_series_windows(path, "eeg_timestamps", window_s=(0, 1))
    assert by_timestamps.data.shape == (10, 250, 3)
    assert by_timestamps.dropped_trials == [6, 7]
    assert by_timestamps.labels["speed"].value_counts().to_dict() == {"slow": 5, "fast": 5}
    np.testing.assert_allclose(by_timestamps.data[:, 0, 0], by_timestamps.labels["start_time"], atol=1e-4)
    descriptions = [entry["description"] for entry in summarize_nwb(path)["series"]]
    assert "rate 250 Hz, t0 2 s" in descriptions
    assert any("timestamps, 12500 samples, largest gap 10" in text for text in descriptions)


@pytest.mark.parametrize("name,column", [("trials_col_name.nwb", "name"), ("trials_col_description.nwb", "description")])
def test_09_column_named_name_or_description(name, column):
    path = case("09-column-named-name-or-description", name)
    summary = summarize_nwb(path)
    assert column in summary["interval_tables"]["trials"]["columns"]
    assert "column_name_clash" in note_codes(path)
    counts = trial_spike_counts(path, window_s=(0, 1), bin_ms=100)
    assert counts.labels[column].value_counts().to_dict() == {"grating": 10, "natural": 10}


def test_11_units_obs_intervals():
    path = case("11-units-obs-intervals", "obs_intervals.nwb")
    summary = summarize_nwb(path)
    assert summary["observed_s"] == [100.0, 60.0, 50.0]
    assert "overlapping_obs_intervals" in note_codes(path)
    counts = trial_spike_counts(path, window_s=(0, 1), bin_ms=100)
    assert (~counts.observed).sum() == 18
    starts = counts.labels["start_time"].to_numpy()
    np.testing.assert_array_equal(~counts.observed[:, 1], starts >= 62.5)
    np.testing.assert_array_equal(~counts.observed[:, 2], starts < 50)
    assert np.isnan(counts.counts[~counts.observed[:, 1], :, 1]).all()  # missing, not zero
    assert not np.isnan(counts.counts[counts.observed[:, 0], :, 0]).any()


def test_12_nwb1_legacy_file(tmp_path):
    path = case("12-nwb1-legacy-file", "legacy_nwb1.nwb")
    result = run_neuroseq("explore", path, "--out", tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "NWB 1.x" in result.stderr and "NWB-1.0.5" in result.stderr and "only NWB 2.x is supported" in result.stderr
    assert not (tmp_path / "summary.json").exists()


# Case 20: course notebooks under nbdev 3 on a CPU-only machine ----------------------------------------------------

@pytest.mark.parametrize("fixture,passes", [("old_settings_ini", False), ("pyproject_flagged", True),
                                            ("pyproject_unflagged", False)])
def test_20_nbdev_fixtures(fixture, passes, tmp_path):
    folder = shared_folder("cases", "20-nbdev-gpu-cell-and-old-config", fixture)
    command = shutil.which("nbdev-test")
    copy = tmp_path / folder.name
    shutil.copytree(folder, copy)
    result = subprocess.run([command, "nbs"], cwd=copy, capture_output=True, text=True, timeout=600)
    assert (result.returncode == 0) == passes, result.stdout + result.stderr


def test_20_course_is_cpu_safe():
    "The course's config is nbdev 3's, and every cell that needs a GPU is flagged or guarded."
    assert not (REPO / "settings.ini").exists()
    pyproject = (REPO / "pyproject.toml").read_text()
    assert "[tool.nbdev]" in pyproject and "cuda" in pyproject
    for notebook_path in sorted((REPO / "nbs").glob("*.ipynb")):
        notebook = nbformat.read(notebook_path, as_version=4)
        for cell in notebook.cells:
            if cell.cell_type != "code":
                continue
            source = cell.source
            needs_gpu = ".cuda()" in source or "device='cuda'" in source or 'device="cuda"' in source
            flagged = source.lstrip().startswith(("#| cuda", "#|cuda")) or "cuda.is_available()" in source
            assert not needs_gpu or flagged, f"{notebook_path.name}: a GPU-only cell is neither flagged `#| cuda` nor guarded"
