"""Render the site's processed notebooks to HTML and load every page in headless Chromium.

    python tools/check_site.py --out DIR [--timeout-s 240]

Quarto cannot be installed on the machines this project is tested on, so this check replaces
`nbdev-docs` here:

1. copies the project into a scratch folder beside a link to `../shared` and runs
   `nbdev-proc-nbs` there (it rewrites `nbs/nbdev.yml` and `neuroseq/_modidx.py`, so never in place);
2. renders each processed notebook with nbconvert, and each `.qmd` page as a one-cell notebook,
   into DIR/html without executing anything. Pages get the file names Quarto gives them
   (`03_audio.ipynb` becomes `audio.html`), and the blog listing becomes a plain list of its posts;
3. serves DIR/html on 127.0.0.1 and loads each page in headless Chromium over the DevTools
   protocol, with every host other than 127.0.0.1 unreachable;
4. saves a screenshot of each page in DIR/screenshots and a summary in DIR/report.json.

It fails (exit status 1) when `nbdev-proc-nbs` fails, a page does not load, an image on a page is
broken, or a link on a page points to a file of the site that does not exist. Links to other
hosts are not followed. The helpers that read the Quarto config, frontmatter and links are also
used by tests/test_site.py.
"""
from __future__ import annotations

import argparse
import base64
import functools
import html
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import nbformat
import yaml

REPO = Path(__file__).resolve().parents[1]
NBS = REPO / "nbs"
PAGE_SUFFIXES = (".ipynb", ".qmd", ".md")
SCREENSHOT_MAX_HEIGHT = 6000  # pixels: the top of a long page, enough to see its first figures
SKIPPED_FOLDERS = {"_proc", "_docs", "_site", ".ipynb_checkpoints"}
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--window-size=1280,900",
    # Only the local server is reachable, so a page that needs the network fails here, fast.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]


# ---------------------------------------------------------------- reading pages and the config

def site_pages(nbs_path: Path = NBS) -> list[Path]:
    "List the page sources (notebooks, .qmd and .md files) under `nbs_path`, skipping build folders."
    pages = []
    for path in sorted(nbs_path.rglob("*")):
        parts = path.relative_to(nbs_path).parts
        if any(part.startswith(".") or part in SKIPPED_FOLDERS for part in parts):
            continue
        if path.suffix in PAGE_SUFFIXES and path.is_file():
            pages.append(path)
    return pages


def _parse_yaml_block(text: str) -> dict | None:
    "Parse `text` as a YAML block fenced by `---` lines; None when it is not one."
    match = re.match(r"\A\s*---\s*\n(.*?)\n---\s*(\n|\Z)", text, flags=re.DOTALL)
    if match is None:
        return None
    loaded = yaml.safe_load(match.group(1))
    return loaded if isinstance(loaded, dict) else {}


def read_frontmatter(path: Path) -> dict:
    """Return the frontmatter of a page: the YAML header of a .qmd/.md file, or of a notebook's
    first cell (a markdown cell, as in the source notebooks, or a raw cell, as after `nbdev-proc-nbs`).
    An empty dict when there is none."""
    if path.suffix == ".ipynb":
        notebook = nbformat.read(path, as_version=4)
        cells = [cell for cell in notebook.cells if cell.source.strip()]
        if not cells or cells[0].cell_type == "code":
            return {}
        return _parse_yaml_block(cells[0].source) or {}
    return _parse_yaml_block(path.read_text(encoding="utf-8")) or {}


def markdown_texts(path: Path) -> list[str]:
    "Return the markdown of a page: each markdown cell of a notebook, or the body of a .qmd/.md file."
    if path.suffix == ".ipynb":
        notebook = nbformat.read(path, as_version=4)
        return [cell.source for cell in notebook.cells if cell.cell_type == "markdown"]
    return [path.read_text(encoding="utf-8")]


_FENCED_CODE = re.compile(r"^(```|~~~).*?^\1", flags=re.DOTALL | re.MULTILINE)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_MARKDOWN_LINK = re.compile(r"(!?)\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HTML_LINK = re.compile(r"<(img|a)\b[^>]*?\b(src|href)\s*=\s*[\"']([^\"']+)[\"']", flags=re.IGNORECASE)


def relative_targets(markdown: str) -> list[tuple[str, str]]:
    """Return `(kind, target)` for each link (`kind` "link") and image ("image") in `markdown`
    whose target is a relative path, skipping code, other hosts, `mailto:` and same-page anchors."""
    text = _INLINE_CODE.sub("", _FENCED_CODE.sub("", markdown))
    found = [("image" if bang else "link", target) for bang, target in _MARKDOWN_LINK.findall(text)]
    found += [("image" if tag.lower() == "img" else "link", target) for tag, _, target in _HTML_LINK.findall(text)]
    relative = []
    for kind, target in found:
        if target.startswith(("#", "/")) or urllib.parse.urlparse(target).scheme:
            continue
        relative.append((kind, target))
    return relative


def output_name(relative_source: Path) -> Path:
    "Return the HTML path Quarto writes for a page source, as nbdev names it (`03_audio.ipynb` -> `audio.html`)."
    from nbdev.config import nbpath2html

    return Path(nbpath2html(Path(relative_source)))


def target_exists(page: Path, target: str, nbs_path: Path = NBS) -> bool:
    """Check that a relative link `target` on `page` names a file of the site: a source file,
    or the HTML page that Quarto renders from a source."""
    path_part = urllib.parse.unquote(target.split("#", 1)[0].split("?", 1)[0])
    if not path_part:
        return True
    resolved = (page.parent / path_part).resolve()
    if resolved.exists():
        return True
    if resolved.suffix == ".html":
        outputs = {(nbs_path / output_name(source.relative_to(nbs_path))).resolve() for source in site_pages(nbs_path)}
        return resolved in outputs
    return False


def load_quarto_config(nbs_path: Path = NBS) -> dict:
    "Return `_quarto.yml` merged with its metadata files (`nbdev.yml`, `sidebar.yml`), one level deep per key."
    config = yaml.safe_load((nbs_path / "_quarto.yml").read_text(encoding="utf-8"))
    for name in config.get("metadata-files", []):
        extra = yaml.safe_load((nbs_path / name).read_text(encoding="utf-8")) or {}
        for key, value in extra.items():
            if isinstance(value, dict) and isinstance(config.get(key), dict):
                config[key] = {**config[key], **value}
            else:
                config[key] = value
    return config


def _hrefs(items) -> list[str]:
    "Collect the `href`s of navbar or sidebar items, descending into sections and menus."
    hrefs = []
    for item in items or []:
        if isinstance(item, str):
            hrefs.append(item)
        elif isinstance(item, dict):
            if "href" in item:
                hrefs.append(item["href"])
            hrefs += _hrefs(item.get("contents")) + _hrefs(item.get("menu"))
    return hrefs


def sidebar_hrefs(config: dict) -> list[str]:
    "Return every page the sidebar lists, in order."
    sidebar = config.get("website", {}).get("sidebar", {})
    sidebars = sidebar if isinstance(sidebar, list) else [sidebar]
    return [href for one in sidebars for href in _hrefs(one.get("contents"))]


def sidebar_section(config: dict, title: str) -> list[str]:
    "Return the pages of the sidebar section called `title`."
    sidebar = config.get("website", {}).get("sidebar", {})
    for item in sidebar.get("contents", []):
        if isinstance(item, dict) and item.get("section") == title:
            return _hrefs(item.get("contents"))
    return []


def navbar_hrefs(config: dict) -> list[str]:
    "Return every link in the navbar."
    navbar = config.get("website", {}).get("navbar", {})
    return _hrefs(navbar.get("left")) + _hrefs(navbar.get("right"))


def listing_folders(page: Path) -> list[Path]:
    "Return the folders a Quarto listing page collects its items from."
    listing = read_frontmatter(page).get("listing")
    if not listing:
        return []
    listings = listing if isinstance(listing, list) else [listing]
    folders = []
    for one in listings:
        contents = one.get("contents", []) if isinstance(one, dict) else []
        for entry in [contents] if isinstance(contents, str) else contents:
            folders.append(page.parent / entry)
    return folders


# ---------------------------------------------------------------- nbdev-proc-nbs in a scratch copy

def copy_project(destination: Path) -> Path:
    """Copy what `nbdev-proc-nbs` reads (pyproject.toml, nbs/, the package) into `destination`/neuroseq,
    with `destination`/shared linked to this checkout's ../shared, so notebooks find the real data."""
    project = destination / "neuroseq"
    project.mkdir(parents=True)
    shutil.copy2(REPO / "pyproject.toml", project / "pyproject.toml")
    ignore = shutil.ignore_patterns("_proc", "_docs", "_site", ".ipynb_checkpoints", "__pycache__")
    shutil.copytree(NBS, project / "nbs", ignore=ignore)
    shutil.copytree(REPO / "neuroseq", project / "neuroseq", ignore=ignore)
    shared = (REPO.parent / "shared").resolve()
    if shared.exists():
        (destination / "shared").symlink_to(shared, target_is_directory=True)
    return project


# Processes each page the way `nbdev-proc-nbs` does, but goes on after a page that fails and prints
# "FAILED <page>" with the error for each. NOTE: it calls nbdev's private helpers (`nbdev.serve._proc_file`,
# `nbdev.serve_drv.main`, nbdev 3.3), so a later nbdev may need this changed; it only runs after a failure.
_PROCESS_EACH_PAGE = """
import traceback
from pathlib import Path
import nbdev.serve_drv
from nbdev.config import get_config
from nbdev.doclinks import nbglob
from nbdev.serve import _proc_file

config = get_config()
cache, nbs = config.config_path / "_proc", config.nbs_path
for source in nbglob(nbs, func=Path, file_glob="", file_re=""):
    job = _proc_file(source, cache=cache, path=nbs)
    if job is None:
        continue
    try:
        nbdev.serve_drv.main(job)
    except Exception as error:
        print(f"FAILED {source.relative_to(nbs)}\\n{error}\\nEND FAILED", flush=True)
"""


def _run(command: list[str], project: Path, timeout_s: float) -> tuple[int, str]:
    "Run `command` in `project`, importing neuroseq from there; return its exit status (124: timed out) and output."
    # The project's own package, not whichever checkout `pip install -e` last pointed the environment at.
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": os.pathsep.join(filter(None, [str(project), os.environ.get("PYTHONPATH")]))}
    try:
        result = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=max(1, timeout_s))
    except subprocess.TimeoutExpired as error:
        return 124, f"{command[0]} timed out after {timeout_s:.0f} s\n{error.stdout or ''}{error.stderr or ''}"
    return result.returncode, result.stdout + result.stderr


def failed_cell(output: str, nbs_path: Path = NBS) -> tuple[Path | None, int | None, str, str]:
    """Find the notebook and cell that a failed `nbdev-proc-nbs` run stopped at, from its output.
    Returns (notebook or None, index of the cell in the file or None, first line of the cell, error line).
    nbdev reports only its own cell number and the source, so the notebook is found by that source."""
    errors = [line for line in output.splitlines() if re.match(r"^\w*(Error|Exception)\b", line) and "Error in" not in line]
    error = errors[-1] if errors else "no error line in the output"
    match = re.search(r"Error(?: in notebook: .*?)? in cell \d+ :\n(.*?)\n\w*(?:Error|Exception|Exit)\w*: [^\n]*$", output, flags=re.DOTALL | re.MULTILINE)
    if match is None:
        return None, None, "", error
    source = match.group(1).strip()
    first_line = source.split("\n", 1)[0]
    for page in site_pages(nbs_path):
        if page.suffix != ".ipynb":
            continue
        cells = nbformat.read(page, as_version=4).cells
        found = [index for index, cell in enumerate(cells) if source and cell.source.strip() == source]
        if found:
            return page, found[0], first_line, error
    return None, None, first_line, error


def describe_proc_failure(output: str, nbs_path: Path = NBS) -> str:
    "Say in one line which notebook and cell made `nbdev-proc-nbs` fail, and with what error."
    page, index, first_line, error = failed_cell(output, nbs_path)
    if page is None:
        return error if not first_line else f"a cell starting `{first_line.strip()}`: {error}"
    where = f"{page.relative_to(nbs_path)}, cell {index} counting from 0 (`{first_line.strip()}`): {error}"
    if error.startswith("NameError"):
        where += (". nbdev-proc-nbs runs only the cells that import, export or call show_doc, so such a cell "
                  "must not use names defined in other cells: move its imports into a cell of their own")
    return where


def process_notebooks(destination: Path, timeout_s: float = 300) -> tuple[list[str], Path]:
    """Run `nbdev-proc-nbs` on a copy of the project in `destination`.

    `nbdev-proc-nbs` stops at the first page that fails, so after a failure the remaining pages are
    processed one by one, to name every failing page in one go and to leave as many processed pages as
    possible for rendering. Returns one line per failure (empty when it succeeded) and the `_proc` folder."""
    project = copy_project(destination)
    deadline = time.monotonic() + timeout_s
    workers = str(min(2, os.cpu_count() or 1))  # two workers halve the time on a 2-core CI machine
    status, output = _run(["nbdev-proc-nbs", "--n-workers", workers], project, timeout_s)
    if status == 0:
        return [], project / "_proc"
    if status == 124:
        return [f"nbdev-proc-nbs timed out after {timeout_s:.0f} s"], project / "_proc"

    failures = [f"nbdev-proc-nbs failed with status {status}: {describe_proc_failure(output, project / 'nbs')}"]
    each_status, each_output = _run([sys.executable, "-c", _PROCESS_EACH_PAGE], project, deadline - time.monotonic())
    if each_status == 124:
        failures.append("processing the remaining pages one by one timed out, so more pages may fail than listed here")
    elif each_status != 0:
        failures.append(f"processing the remaining pages one by one failed with status {each_status}: {each_output[-300:]}")
    first_page, _, _, _ = failed_cell(output, project / "nbs")
    for page, error in re.findall(r"^FAILED (.+?)\n(.*?)\nEND FAILED$", each_output, flags=re.DOTALL | re.MULTILINE):
        if first_page is None or Path(page) != first_page.relative_to(project / "nbs"):
            failures.append(f"nbdev-proc-nbs also fails on {describe_proc_failure(error, project / 'nbs')}")
    return failures, project / "_proc"


# ---------------------------------------------------------------- rendering with nbconvert

# Pages whose content is their outputs and that run in well under a minute: when nbdev-proc-nbs did not
# process them, the check executes them itself rather than render an empty page.
EXECUTED_WHEN_UNPROCESSED = {"reference.ipynb"}


def execute_notebook(source: Path, target: Path, timeout_s: float) -> list[str]:
    "Execute a notebook in its folder with this checkout's package and write it to `target`; return any problem."
    from nbconvert.preprocessors import CellExecutionError, ExecutePreprocessor

    notebook = nbformat.read(source, as_version=4)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    try:
        ExecutePreprocessor(timeout=max(10, int(timeout_s)), kernel_name="python3").preprocess(
            notebook, {"metadata": {"path": str(source.parent)}})
    except (CellExecutionError, TimeoutError, RuntimeError) as error:
        shutil.copy2(source, target)
        return [f"{source.relative_to(NBS)} failed to execute: {str(error).strip().splitlines()[-1][:300]}"]
    nbformat.write(notebook, target)
    return []


def _title_cell(frontmatter: dict, fallback: str) -> nbformat.NotebookNode:
    title = frontmatter.get("title", fallback)
    description = frontmatter.get("description", "")
    text = f"# {title}" + (f"\n\n*{description}*" if description else "")
    return nbformat.v4.new_markdown_cell(text)


def _listing_markdown(page: Path) -> str:
    "Write the items of a Quarto listing page as a markdown list, the way the listing links them."
    lines = []
    for folder in listing_folders(page):
        for post in site_pages(folder):
            meta = read_frontmatter(post)
            href = output_name(post.relative_to(page.parent)).as_posix()
            lines.append(f"- [{meta.get('title', post.stem)}]({href}): {meta.get('description', '')}")
    return "\n".join(lines)


_CELL_KEYS = {
    "code": {"cell_type", "id", "metadata", "source", "outputs", "execution_count"},
    "markdown": {"cell_type", "id", "metadata", "source", "attachments"},
    "raw": {"cell_type", "id", "metadata", "source", "attachments"},
}


def page_notebook(source: Path) -> nbformat.NotebookNode:
    "Turn a processed page into the notebook nbconvert renders: its title on top, frontmatter cells removed."
    frontmatter = read_frontmatter(source)
    if source.suffix == ".ipynb":
        notebook = nbformat.read(source, as_version=4)
        cells = [cell for cell in notebook.cells if cell.source.strip()]
        if cells and cells[0].cell_type != "code" and _parse_yaml_block(cells[0].source) is not None:
            cells = cells[1:]
        for cell in cells:  # nbdev-proc-nbs adds its own keys (`has_sd`), which nbformat rejects
            for key in set(cell) - _CELL_KEYS[cell.cell_type]:
                del cell[key]
            cell.metadata.pop("execution", None)  # its timings are numbers where nbformat expects strings
            if cell.cell_type == "code" and re.search(r"^#\|\s*echo:\s*false", cell.source, flags=re.MULTILINE):
                cell.metadata["tags"] = [*cell.metadata.get("tags", []), "remove_input"]
        notebook.cells = [_title_cell(frontmatter, source.stem)] + cells
        return notebook
    body = re.sub(r"\A\s*---\s*\n.*?\n---\s*\n", "", source.read_text(encoding="utf-8"), flags=re.DOTALL)
    if frontmatter.get("listing"):
        body += "\n\n" + _listing_markdown(source)
    notebook = nbformat.v4.new_notebook(cells=[_title_cell(frontmatter, source.stem), nbformat.v4.new_markdown_cell(body)])
    notebook.metadata["kernelspec"] = {"display_name": "python3", "language": "python", "name": "python3"}
    return notebook


_SOURCE_LINK = re.compile(r"""(href|src)=(["'])(?!https?:|mailto:|#|/)([^"'#?]+?)\.(ipynb|qmd)([#?][^"']*)?\2""")


def _navbar_html(config: dict, page_output: Path) -> str:
    "Write the navbar links of the Quarto config as a plain HTML bar, relative to `page_output`."
    depth = len(page_output.parts) - 1
    up = "../" * depth
    navbar = config.get("website", {}).get("navbar", {})
    links = [f'<a href="{up}index.html">{html.escape(config.get("website", {}).get("title", "home"))}</a>']
    for item in navbar.get("left", []):
        if isinstance(item, dict) and "href" in item:
            target = output_name(Path(item["href"])).as_posix()
            links.append(f'<a href="{up}{target}">{html.escape(str(item.get("text", target)))}</a>')
    return '<nav class="site-check-navbar" style="padding:8px 16px;background:#2780e3">' + " &middot; ".join(
        link.replace("<a ", '<a style="color:white;margin-right:8px" ') for link in links) + "</nav>"


def render_site(proc_path: Path, html_path: Path, config: dict) -> list[str]:
    """Render every page in `proc_path` into `html_path` with nbconvert and copy the other files
    (figures) beside them. Returns the rendered pages' paths relative to `html_path`."""
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import TagRemovePreprocessor

    if sys.prefix != sys.base_prefix:
        # In a virtual environment made with --system-site-packages, Jupyter searches the environment's share/jupyter
        # but not the base interpreter's, where nbconvert's templates were installed.
        base_share = str(Path(sys.base_prefix) / "share" / "jupyter")
        os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [os.environ.get("JUPYTER_PATH"), base_share]))
    exporter = HTMLExporter(template_name="lab", exclude_input_prompt=True, exclude_output_prompt=True)
    exporter.register_preprocessor(TagRemovePreprocessor(remove_input_tags={"remove_input"}), enabled=True)
    rendered = []
    for path in sorted(proc_path.rglob("*")):
        relative = path.relative_to(proc_path)
        if path.is_dir() or any(part.startswith(".") for part in relative.parts):
            continue
        if path.suffix not in PAGE_SUFFIXES:
            (html_path / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, html_path / relative)
            continue
        target = html_path / output_name(relative)
        body, _ = exporter.from_notebook_node(page_notebook(path), resources={"metadata": {"name": read_frontmatter(path).get("title", path.stem)}})
        # Quarto links pages by their HTML names; do the same for links written to source files.
        body = _SOURCE_LINK.sub(lambda m: f'{m[1]}={m[2]}{output_name(Path(m[3] + "." + m[4])).as_posix()}{m[5] or ""}{m[2]}', body)
        body = re.sub(r"(<body[^>]*>)", lambda m: m[1] + _navbar_html(config, output_name(relative)), body, count=1)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(body, encoding="utf-8")
        rendered.append(output_name(relative).as_posix())
    return rendered


# ---------------------------------------------------------------- serving and browsing

class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the signature is fixed by the base class
        pass


def serve(folder: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    "Serve `folder` on 127.0.0.1 on a free port, in a background thread. Returns the server and its base URL."
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


class DevTools:
    "A minimal client of the Chrome DevTools protocol for one page target."

    def __init__(self, websocket_url: str):
        import websocket

        self.socket = websocket.create_connection(websocket_url, timeout=30, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, timeout_s: float = 30, **params) -> dict:
        "Send a command and return its result, keeping the events that arrive meanwhile."
        self.next_id += 1
        request_id = self.next_id
        self.socket.send(json.dumps({"id": request_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            message = json.loads(self.socket.recv())
            if message.get("id") == request_id:
                if "error" in message:
                    raise RuntimeError(f"{method} failed: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)
        raise TimeoutError(f"{method} got no reply within {timeout_s:.0f} s")

    def wait_for(self, event: str, timeout_s: float) -> bool:
        "Wait for an event (or find it among those already received); False when it did not come in time."
        import websocket

        deadline = time.monotonic() + timeout_s
        if any(message["method"] == event for message in self.events):
            return True
        self.socket.settimeout(1)
        try:
            while time.monotonic() < deadline:
                try:
                    message = json.loads(self.socket.recv())
                except websocket.WebSocketTimeoutException:
                    continue
                if "method" in message:
                    self.events.append(message)
                    if message["method"] == event:
                        return True
        finally:
            self.socket.settimeout(30)
        return False


def start_chromium(profile: Path, timeout_s: float = 30) -> tuple[subprocess.Popen, int]:
    "Start headless Chromium with a fresh profile and return the process and its DevTools port."
    binary = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if binary is None:
        raise FileNotFoundError("Chromium was not found on PATH; install it with `apt-get install -y chromium`")
    command = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
               "--remote-debugging-address=127.0.0.1", "about:blank"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if port_file.exists() and port_file.read_text().strip():
            return process, int(port_file.read_text().splitlines()[0])
        if process.poll() is not None:
            raise RuntimeError(f"Chromium exited with status {process.returncode}: {process.stderr.read().decode()[-2000:]}")
        time.sleep(0.2)
    process.kill()
    raise TimeoutError(f"Chromium did not open its DevTools port within {timeout_s:.0f} s")


_PAGE_PROBE = """(() => {
  const images = Array.from(document.images);
  const broken = images.filter(img => !img.complete || img.naturalWidth === 0).map(img => img.currentSrc || img.src);
  const links = Array.from(document.querySelectorAll('a[href]')).map(a => a.href)
    .filter(href => href.startsWith(location.origin));
  return {title: document.title, images: images.length, broken_images: broken, links: Array.from(new Set(links)),
          headings: Array.from(document.querySelectorAll('h1')).map(h => h.textContent.trim()).slice(0, 3)};
})()"""


def browse(pages: list[str], base_url: str, html_path: Path, screenshots: Path, deadline: float) -> list[dict]:
    "Load each page in headless Chromium, probe it, save a screenshot; return one record per page."
    profile = Path(tempfile.mkdtemp(prefix="neuroseq-chromium-"))
    process, port = start_chromium(profile)
    records = []
    try:
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
        page_target = next(target for target in targets if target.get("type") == "page")
        tools = DevTools(page_target["webSocketDebuggerUrl"])
        for domain in ("Page", "Network", "Runtime"):
            tools.call(f"{domain}.enable")
        tools.call("Emulation.setDeviceMetricsOverride", width=1280, height=900, deviceScaleFactor=1, mobile=False)
        for page in pages:
            records.append(_browse_page(tools, page, base_url, html_path, screenshots, deadline))
    finally:
        process.kill()
        process.wait(timeout=10)
        shutil.rmtree(profile, ignore_errors=True)
    return records


def _browse_page(tools: DevTools, page: str, base_url: str, html_path: Path, screenshots: Path, deadline: float) -> dict:
    record = {"page": page, "problems": [], "notes": []}
    if time.monotonic() > deadline:
        record["problems"].append("not loaded: the check ran out of time")
        return record
    tools.events.clear()
    url = base_url + page
    navigation = tools.call("Page.navigate", url=url)
    if navigation.get("errorText"):
        record["problems"].append(f"did not load: {navigation['errorText']}")
        return record
    if not tools.wait_for("Page.loadEventFired", timeout_s=min(30, max(1, deadline - time.monotonic()))):
        record["problems"].append("did not finish loading within 30 s")

    requests = {event["params"]["requestId"]: event["params"]["request"]["url"]
                for event in tools.events if event["method"] == "Network.requestWillBeSent"}
    for event in tools.events:
        params = event.get("params", {})
        if event["method"] == "Network.responseReceived" and params["response"]["url"].startswith(base_url):
            if params["response"]["status"] >= 400:
                record["problems"].append(f"HTTP {params['response']['status']} for {params['response']['url']}")
        elif event["method"] == "Network.loadingFailed":
            failed_url = requests.get(params["requestId"], "?")
            if failed_url.startswith(base_url):
                record["problems"].append(f"request failed ({params.get('errorText')}): {failed_url}")
            else:
                record["notes"].append(f"blocked request to another host: {failed_url}")
        elif event["method"] == "Runtime.exceptionThrown":
            record["notes"].append("JavaScript error: " + params["exceptionDetails"].get("text", "")
                                   + " " + str(params["exceptionDetails"].get("exception", {}).get("description", ""))[:200])

    probe = tools.call("Runtime.evaluate", expression=_PAGE_PROBE, returnByValue=True)["result"]["value"]
    record.update(title=probe["title"], headings=probe["headings"], images=probe["images"])
    for src in probe["broken_images"]:
        record["problems"].append(f"broken image: {src}")
    for link in probe["links"]:
        path_part = urllib.parse.unquote(urllib.parse.urlparse(link).path).lstrip("/")
        local = html_path / path_part
        if not (local.is_file() or (local / "index.html").is_file()):
            record["problems"].append(f"broken link: {link[len(base_url) - 1:]}")

    screenshot = screenshots / (page.removesuffix(".html").replace("/", "__") + ".png")
    metrics = tools.call("Page.getLayoutMetrics")
    height = min(SCREENSHOT_MAX_HEIGHT, int(metrics.get("cssContentSize", metrics.get("contentSize"))["height"]))
    image = tools.call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                       clip={"x": 0, "y": 0, "width": 1280, "height": max(height, 1), "scale": 1})["data"]
    screenshot.write_bytes(base64.b64decode(image))
    record["screenshot"] = screenshot.name
    return record


# ---------------------------------------------------------------- the check

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the HTML pages, screenshots and report.json")
    parser.add_argument("--timeout-s", type=float, default=240, help="time limit of the whole check, in seconds")
    args = parser.parse_args(argv)
    started = time.monotonic()
    deadline = started + args.timeout_s
    out = args.out.resolve()
    html_path, screenshots = out / "html", out / "screenshots"
    for folder in (html_path, screenshots):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)

    problems = []
    scratch = Path(tempfile.mkdtemp(prefix="neuroseq-site-"))
    try:
        print("nbdev-proc-nbs on a copy of the project ...", flush=True)
        failures, proc_path = process_notebooks(scratch, timeout_s=max(30, (deadline - time.monotonic()) * 0.6))
        problems += failures
        if not proc_path.exists():
            proc_path.mkdir()
        # Pages that nbdev-proc-nbs could not process are rendered from their sources, so the rest is still checked.
        for source in site_pages(NBS):
            relative = source.relative_to(NBS)
            if (proc_path / relative).exists():
                continue
            (proc_path / relative).parent.mkdir(parents=True, exist_ok=True)
            if relative.as_posix() in EXECUTED_WHEN_UNPROCESSED:
                problems += execute_notebook(source, proc_path / relative, timeout_s=min(180, deadline - time.monotonic()))
            else:
                shutil.copy2(source, proc_path / relative)
        for other in NBS.rglob("*"):
            relative = other.relative_to(NBS)
            if other.is_file() and other.suffix not in PAGE_SUFFIXES and not (proc_path / relative).exists() \
                    and not any(part.startswith(".") or part in SKIPPED_FOLDERS for part in relative.parts):
                (proc_path / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(other, proc_path / relative)

        print("rendering with nbconvert ...", flush=True)
        pages = render_site(proc_path, html_path, load_quarto_config(NBS))
        print(f"rendered {len(pages)} pages; loading them in headless Chromium ...", flush=True)
        server, base_url = serve(html_path)
        try:
            records = browse(pages, base_url, html_path, screenshots, deadline)
        finally:
            server.shutdown()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    broken_links: dict[str, list[str]] = {}  # a link in the navbar is broken on every page: report it once
    for record in records:
        mark = "FAILED" if record["problems"] else "ok"
        print(f"  {mark}: {record['page']} ({record.get('images', 0)} images) -> {record.get('screenshot', 'no screenshot')}")
        for problem in record["problems"]:
            print(f"      {problem}")
            if problem.startswith("broken link: "):
                broken_links.setdefault(problem.removeprefix("broken link: "), []).append(record["page"])
            else:
                problems.append(f"{record['page']}: {problem}")
    for link, pages_with_link in broken_links.items():
        shown = ", ".join(pages_with_link[:3]) + (f" and {len(pages_with_link) - 3} more" if len(pages_with_link) > 3 else "")
        problems.append(f"broken link {link} on {shown}")
    report = {"seconds": round(time.monotonic() - started, 1), "pages": records, "problems": problems}
    (out / "report.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    print(f"screenshots: {screenshots}")
    print(f"report: {out / 'report.json'} ({report['seconds']} s)")
    for problem in problems:
        print(f"problem: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
