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
    assert "5 units" in result.stdout
    assert "545 spikes" in result.stdout


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
    assert "trial_relative.nwb" in message
    assert "'trials'" in message
    assert "zero duration" in message
    assert "trial-relative" in message


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
    assert sample_note
    assert "/ 30000" in sample_note[0]
    assert "299.5" in sample_note[0]
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
    assert "NWB 1.x" in result.stderr
    assert "NWB-1.0.5" in result.stderr
    assert "only NWB 2.x is supported" in result.stderr
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
    assert "[tool.nbdev]" in pyproject
    assert "cuda" in pyproject
    for notebook_path in sorted((REPO / "nbs").glob("*.ipynb")):
        notebook = nbformat.read(notebook_path, as_version=4)
        for cell in notebook.cells:
            if cell.cell_type != "code":
                continue
            source = cell.source
            needs_gpu = ".cuda()" in source or "device='cuda'" in source or 'device="cuda"' in source
            flagged = source.lstrip().startswith(("#| cuda", "#|cuda")) or "cuda.is_available()" in source
            assert not needs_gpu or flagged, f"{notebook_path.name}: a GPU-only cell is neither flagged `#| cuda` nor guarded"


# Siblings of the cases: the same faults in places and forms the case folder does not hold ---------------------------

def write_units_in(path, module_name, table_name, also_root=False):
    "Write an NWB file whose units table lives in processing/<module_name>/<table_name>, and optionally /units too."
    import datetime

    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.misc import Units

    nwbfile = NWBFile(session_description="sibling", identifier=path.stem,
                      session_start_time=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc))
    units = Units(name=table_name, description="sorted elsewhere")
    for times in ([1.1, 1.2, 3.5], [1.4]):
        units.add_unit(spike_times=times)
    nwbfile.create_processing_module(module_name, "spike sorting output").add(units)
    if also_root:
        nwbfile.add_unit(spike_times=[1.05])
    for index in range(3):
        nwbfile.add_trial(start_time=1.0 + 2 * index, stop_time=2.0 + 2 * index)
    with NWBHDF5IO(path, "w") as io:
        io.write(nwbfile)
    return path


def test_02_units_under_any_module_name(tmp_path):
    path = write_units_in(tmp_path / "sorted.nwb", "spike_sorting", "kilosort_units")
    counts = trial_spike_counts(path, window_s=(0, 1), bin_ms=100)
    np.testing.assert_array_equal(counts.counts.sum(axis=(0, 1)), [3, 1])  # 3.5 s falls in the second trial
    assert summarize_nwb(path)["units_path"] == "processing/spike_sorting/kilosort_units"


def test_02_root_units_preferred_and_other_table_selectable(tmp_path):
    path = write_units_in(tmp_path / "both.nwb", "ecephys", "units", also_root=True)
    assert trial_spike_counts(path, window_s=(0, 1), bin_ms=100).counts.sum() == 1  # /units
    other = trial_spike_counts(path, window_s=(0, 1), bin_ms=100, units="processing/ecephys/units")
    assert other.counts.sum() == 4
    assert "several_units_tables" in note_codes(path)  # the second table is mentioned, not hidden


def test_non_finite_spike_times_dropped(tmp_path):
    from test_explore import regular_trials, write_nwb

    path = write_nwb(tmp_path / "nan_spikes.nwb", units=[[1.1, float("nan"), 1.3], [float("inf"), 3.2]],
                     trials=regular_trials())
    with pytest.warns(UserWarning, match="2 spike times .* NaN or infinite"):
        counts = trial_spike_counts(path, window_s=(0, 1), bin_ms=100)
    np.testing.assert_array_equal(counts.counts.sum(axis=(0, 1)), [2, 1])
    assert "non_finite_spike_times" in note_codes(path)


def test_07_series_inside_processing_lfp_container(tmp_path):
    "An ElectricalSeries inside processing/ecephys/LFP is found by name, with its rate and start time."
    import datetime

    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.ecephys import LFP, ElectricalSeries

    nwbfile = NWBFile(session_description="lfp", identifier="lfp",
                      session_start_time=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc))
    device = nwbfile.create_device("probe")
    group = nwbfile.create_electrode_group("shank", description="", location="CA1", device=device)
    nwbfile.add_electrode(group=group, location="CA1")
    region = nwbfile.create_electrode_table_region([0], "one channel")
    times = 0.5 + np.arange(2000) / 100.0
    series = ElectricalSeries(name="lfp_filtered", data=times[:, None], electrodes=region, starting_time=0.5, rate=100.0)
    nwbfile.create_processing_module("ecephys", "processed").add(LFP(electrical_series=series))
    for start in (1.0, 5.0):
        nwbfile.add_trial(start_time=start, stop_time=start + 1)
    with NWBHDF5IO(tmp_path / "lfp.nwb", "w") as io:
        io.write(nwbfile)
    windows = trial_series_windows(tmp_path / "lfp.nwb", "lfp_filtered", window_s=(0, 1))
    assert windows.data.shape == (2, 100, 1)
    np.testing.assert_allclose(windows.data[:, 0, 0], [1.0, 5.0], atol=1e-6)
