"""Shared fixtures: where the real data and the problem cases live, and a runner for the `neuroseq` command."""
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DATA = SHARED / "data"
CASES = SHARED / "cases"


def shared_folder(*parts) -> Path:
    "Return a folder under ../shared, failing (not skipping) the test when it is missing."
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.fail(f"{path} is missing: the real data and cases must sit in ../shared beside the repository")
    return path


def run_neuroseq(*args, cwd=None, timeout=600):
    "Run the `neuroseq` command in a subprocess as a user would; return the CompletedProcess."
    return subprocess.run([sys.executable, "-m", "neuroseq", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or REPO, timeout=timeout)


@pytest.fixture(autouse=True)
def isolated_data_home(tmp_path_factory, monkeypatch):
    "Give each test session its own NEUROSEQ_DATA so cached synthetic files never leak between runs."
    monkeypatch.setenv("NEUROSEQ_DATA", str(tmp_path_factory.getbasetemp() / "neuroseq_data"))


def assert_one_line_error(result, *fragments):
    "Check that a `neuroseq` run failed with exit status 2 and one error line that contains every fragment."
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("neuroseq: error:")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
