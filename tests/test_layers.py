"""The import rules between the package's layers: models never load data sources, file readers or the CLI."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

import neuroseq

MODEL_MODULES = ["transformer", "gpt", "wavenet", "neural_gpt", "audio_cnn", "vision"]
DATA_SOURCE_MODULES = ["nwb", "audio", "synthetic"]
FORBIDDEN_FOR_MODELS = ["neuroseq.nwb", "neuroseq.audio", "neuroseq.synthetic", "neuroseq.cli", "pynwb", "librosa",
                        "soundfile"]
FORBIDDEN_FOR_DATA_SOURCES = ["torch", "fastai", "neuroseq.cli"]


def loaded_modules(module: str) -> set:
    "Return the names in sys.modules after importing `module` in a fresh interpreter."
    code = f"import sys, {module}; print('\\n'.join(sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(result.stdout.split())


@pytest.mark.parametrize("name", MODEL_MODULES)
def test_model_module_imports_no_data_source(name):
    loaded = loaded_modules(f"neuroseq.{name}")
    for forbidden in FORBIDDEN_FOR_MODELS:
        assert forbidden not in loaded, f"importing neuroseq.{name} loads {forbidden}"


@pytest.mark.parametrize("name", DATA_SOURCE_MODULES)
def test_data_source_imports_no_torch(name):
    loaded = loaded_modules(f"neuroseq.{name}")
    for forbidden in FORBIDDEN_FOR_DATA_SOURCES:
        assert forbidden not in loaded, f"importing neuroseq.{name} loads {forbidden}"


def imported_names(path) -> set:
    "Return every module that the source file at `path` imports, at the top or inside a function."
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = "neuroseq." + node.module if node.level and node.module else (node.module or "neuroseq")
            names.add(base)
    return names


@pytest.mark.parametrize("name", MODEL_MODULES)
def test_model_source_imports_no_data_source(name):
    path = Path(neuroseq.__file__).parent / f"{name}.py"
    for imported in imported_names(path):
        for forbidden in FORBIDDEN_FOR_MODELS:
            assert not (imported == forbidden or imported.startswith(forbidden + ".")), \
                f"neuroseq/{name}.py imports {imported}, even if only inside a function"
