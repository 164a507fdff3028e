"""The NWB problem cases through the `neuroseq train` command, as a user meets them.

Each case folder's README states the behaviour a correct tool shows; a missing folder fails the test.
"""
import json

import pytest

from conftest import assert_one_line_error, run_neuroseq, shared_folder

QUICK = ["--model", "linear", "--epochs", "2", "--permutations", "10"]


def case_file(folder, name):
    path = shared_folder("cases", folder) / name
    if not path.exists():
        pytest.fail(f"{path} is missing")
    return path


def train(tmp_path, path, *options):
    out = tmp_path / "model"
    result = run_neuroseq("train", path, *options, *QUICK, "--out", out)
    return result, out


def test_01_trains_on_spike_times_not_index(tmp_path):
    path = case_file("01-spike-times-index-trap", "units_index_trap.nwb")
    result, out = train(tmp_path, path, "--trials", "trials", "--align", "start_time", "--window", "0", "2",
                        "--bin-ms", "100", "--label", "stim")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["labels"] == ["A", "B"]
    assert metrics["n_train"] + metrics["n_test"] == 40


def test_02_trains_from_processing_units(tmp_path):
    path = case_file("02-units-in-processing-module", "units_in_processing.nwb")
    result, out = train(tmp_path, path, "--window", "0", "1", "--bin-ms", "50", "--label", "choice")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_train"] + metrics["n_test"] == 20


def test_04_trial_relative_times_rejected(tmp_path):
    path = case_file("04-trial-relative-spike-times", "trial_relative.nwb")
    result, out = train(tmp_path, path, "--trials", "trials", "--align", "start_time", "--window", "0", "1",
                        "--label", "outcome")
    assert_one_line_error(result, "trial_relative.nwb", "'trials'", "zero duration", "trial-relative")
    assert not (out / "model.safetensors").exists()


def test_05_sample_index_spike_times_rejected(tmp_path):
    path = case_file("05-spike-times-in-samples", "spikes_in_samples.nwb")
    result, out = train(tmp_path, path, "--window", "0", "0.5", "--label", "stim")
    assert_one_line_error(result, "spikes_in_samples.nwb", "no spikes fall in any trial window", "sample indices")
    assert not out.exists() or not list(out.iterdir())


def test_07_series_with_gap_drops_trials(tmp_path):
    path = case_file("07-timestamps-vs-rate", "timestamps_vs_rate.nwb")
    result, out = train(tmp_path, path, "--series", "eeg_timestamps", "--trials", "trials", "--align", "start_time",
                        "--window", "0", "1", "--label", "speed")
    assert result.returncode == 0, result.stderr
    assert "trial indices [6, 7]" in result.stderr  # the two trials inside the gap are named
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_train"] + metrics["n_test"] == 10


@pytest.mark.parametrize("name,column", [("trials_col_name.nwb", "name"), ("trials_col_description.nwb", "description")])
def test_09_label_column_named_like_attribute(tmp_path, name, column):
    path = case_file("09-column-named-name-or-description", name)
    result, out = train(tmp_path, path, "--window", "0", "1", "--label", column)
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "metrics.json").read_text())["labels"] == ["grating", "natural"]


def test_11_partially_observed_units_train(tmp_path):
    path = case_file("11-units-obs-intervals", "obs_intervals.nwb")
    result, out = train(tmp_path, path, "--window", "0", "1", "--label", "odor")
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "metrics.json").read_text())["labels"] == ["A", "B"]


def test_12_nwb1_file_rejected(tmp_path):
    path = case_file("12-nwb1-legacy-file", "legacy_nwb1.nwb")
    result, _ = train(tmp_path, path, "--label", "stim")
    assert_one_line_error(result, "NWB 1.x", "NWB-1.0.5", "only NWB 2.x is supported")


def test_05_rescaled_spike_times_train(tmp_path):
    path = case_file("05-spike-times-in-samples", "spikes_in_samples.nwb")
    result, out = train(tmp_path, path, "--window", "0", "0.5", "--label", "stim", "--spike-times-sampling-rate", "30000")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["baseline_accuracy"] >= 0.8  # grating trials carry about 3.6 spikes per unit, noise trials under 1
    config = json.loads((out / "config.json").read_text())
    assert config["preprocessing"]["spike_times_sampling_rate"] == 30000


def test_02_units_table_option(tmp_path):
    path = case_file("02-units-in-processing-module", "units_in_processing.nwb")
    result, _ = train(tmp_path, path, "--window", "0", "1", "--label", "choice", "--units-table", "processing/ecephys/units")
    assert result.returncode == 0, result.stderr
    result, _ = train(tmp_path, path, "--window", "0", "1", "--label", "choice", "--units-table", "sorted_units")
    assert_one_line_error(result, "units_in_processing.nwb", "no units table at 'sorted_units'", "processing/ecephys/units")
