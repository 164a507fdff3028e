"""Convert notebooks to and from a plain-text percent format, for editing in a text editor.

    python tools/nbpy.py to-py nbs/02_explore_nwb.ipynb  > /tmp/02.py
    python tools/nbpy.py to-nb /tmp/02.py nbs/02_explore_nwb.ipynb

Cells are separated by lines `# %%` (code) and `# %% [markdown]` (markdown, each line prefixed
with `# `). Outputs are dropped, which is what `nbdev-clean` keeps in the repository anyway.
`to-nb` keeps the id of every cell whose type and source are unchanged, so the `# %%` markers in the
exported modules stay put.
"""
import sys
from pathlib import Path

import nbformat

CODE_MARK = "# %%"
MARKDOWN_MARK = "# %% [markdown]"


def notebook_to_text(path):
    "Return the notebook at `path` as percent-format text."
    notebook = nbformat.read(path, as_version=4)
    chunks = []
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            body = "\n".join(("# " + line) if line else "#" for line in cell.source.splitlines())
            chunks.append(f"{MARKDOWN_MARK}\n{body}")
        else:
            chunks.append(f"{CODE_MARK}\n{cell.source}")
    return "\n\n".join(chunks) + "\n"


def text_to_notebook(text):
    "Parse percent-format `text` into a notebook with a Python 3 kernel."
    cells, kind, lines = [], None, []

    def flush():
        if kind is None:
            return
        source = "\n".join(lines).strip("\n")
        if kind == "markdown":
            source = "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#") for line in source.splitlines())
            cells.append(nbformat.v4.new_markdown_cell(source))
        else:
            cells.append(nbformat.v4.new_code_cell(source))

    for line in text.splitlines():
        if line.strip() == MARKDOWN_MARK:
            flush()
            kind, lines = "markdown", []
        elif line.strip() == CODE_MARK:
            flush()
            kind, lines = "code", []
        else:
            lines.append(line)
    flush()
    notebook = nbformat.v4.new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {"display_name": "python3", "language": "python", "name": "python3"}
    return notebook


def keep_cell_ids(notebook, previous_path):
    "Give cells of `notebook` the ids of cells with the same type and source in the notebook at `previous_path`."
    previous = nbformat.read(previous_path, as_version=4)
    ids = {}
    for cell in previous.cells:
        ids.setdefault((cell.cell_type, cell.source), []).append(cell.get("id"))
    for cell in notebook.cells:
        matches = ids.get((cell.cell_type, cell.source))
        if matches:
            cell["id"] = matches.pop(0)
    return notebook


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "to-py":
        sys.stdout.write(notebook_to_text(sys.argv[2]))
    elif len(sys.argv) == 4 and sys.argv[1] == "to-nb":
        notebook = text_to_notebook(Path(sys.argv[2]).read_text())
        if Path(sys.argv[3]).exists():
            notebook = keep_cell_ids(notebook, sys.argv[3])
        nbformat.write(notebook, sys.argv[3])
    else:
        sys.exit(__doc__)
