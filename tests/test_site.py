"""The docs site: the Quarto config, the pages it lists, frontmatter, relative links, and `nbdev-proc-nbs`.

Quarto is not installed where these tests run, so they read the config the way Quarto would:
`_quarto.yml` plus its metadata files (`nbdev.yml`, the hand-written `sidebar.yml`). The pages are
rendered and loaded in a browser by `.ci/site` (tools/check_site.py), not here.
"""
import re
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
NBS = REPO / "nbs"
sys.path.insert(0, str(REPO / "tools"))

import check_site  # noqa: E402 - tools/ is not a package, so its path is added first

LESSONS = [
    "01_first_classifier.ipynb",
    "02_explore_nwb.ipynb",
    "03_audio.ipynb",
    "04_transformer_classifier.ipynb",
    "05_gpt.ipynb",
    "06_generating_neural_data.ipynb",
    "07_wavenet.ipynb",
    "08_interpretability.ipynb",
]


@pytest.fixture(scope="module")
def config():
    return check_site.load_quarto_config(NBS)


def _page_params():
    return [pytest.param(page, id=page.relative_to(NBS).as_posix()) for page in check_site.site_pages(NBS)]


def test_config_files_parse():
    for name in ("_quarto.yml", "nbdev.yml", "sidebar.yml"):
        loaded = yaml.safe_load((NBS / name).read_text(encoding="utf-8"))
        assert isinstance(loaded, dict), f"nbs/{name} is not a YAML mapping"
    quarto = yaml.safe_load((NBS / "_quarto.yml").read_text(encoding="utf-8"))
    assert quarto["project"]["type"] == "website"
    assert {"nbdev.yml", "sidebar.yml"} <= set(quarto["metadata-files"])
    assert (NBS / quarto["format"]["html"]["css"]).exists(), "the stylesheet named in _quarto.yml is missing"


def test_nbdev_yml_matches_pyproject():
    "`nbdev-proc-nbs` rewrites nbdev.yml from pyproject.toml, so a hand edit would be lost and show up as a diff."
    from nbdev.config import get_config
    from nbdev.quarto import _nbdev_yml  # NOTE: nbdev 3.3's private template; a later nbdev may rename it

    settings = get_config(REPO)
    values = {key: settings[key] for key in ("title", "description", "branch", "git_url", "doc_host", "doc_baseurl")}
    expected = _nbdev_yml.format(doc_path=settings.doc_path.name, **values)
    assert (NBS / "nbdev.yml").read_text(encoding="utf-8") == expected


def test_listed_pages_exist(config):
    listed = check_site.sidebar_hrefs(config) + check_site.navbar_hrefs(config)
    missing = [href for href in listed if "://" not in href and not (NBS / href).exists()]
    assert missing == [], f"the sidebar or navbar lists pages that do not exist in nbs/: {missing}"


def test_sidebar_lists_every_notebook(config):
    listed = set(check_site.sidebar_hrefs(config))
    top_level = sorted(path.name for path in NBS.glob("*.ipynb"))
    missing = [name for name in top_level if name not in listed]
    assert missing == [], f"notebooks in nbs/ that the sidebar (nbs/sidebar.yml) does not list: {missing}"


def test_lessons_in_syllabus_order(config):
    section = check_site.sidebar_section(config, "Lessons")
    assert section == LESSONS, f"the sidebar's Lessons section is {section}"
    numbered = sorted(path.name for path in NBS.glob("0[1-9]_*.ipynb"))
    assert [name for name in numbered if name not in LESSONS] == [], "a numbered lesson is missing from LESSONS"


def test_blog_listing_has_posts():
    blog = NBS / "blog" / "index.qmd"
    assert blog.exists()
    folders = check_site.listing_folders(blog)
    assert folders, "blog/index.qmd has no listing"
    for folder in folders:
        assert folder.is_dir(), f"the blog listing reads {folder}, which does not exist"
        posts = check_site.site_pages(folder)
        assert posts, f"the blog listing folder {folder} has no posts"
        for post in posts:
            assert "date" in check_site.read_frontmatter(post), f"{post} has no date, which the listing sorts and shows"


@pytest.mark.parametrize("page", _page_params())
def test_page_has_title_and_description(page):
    frontmatter = check_site.read_frontmatter(page)
    assert frontmatter.get("title"), f"{page} has no title in its frontmatter (a first cell `---\\ntitle: ...\\n---`)"
    assert frontmatter.get("description"), f"{page} has no description in its frontmatter"


def _lessons_present():
    return [pytest.param(NBS / name, id=name) for name in LESSONS if (NBS / name).exists()]


@pytest.mark.parametrize("lesson", _lessons_present())
def test_lesson_opens_and_ends_in_prose(lesson):
    "A lesson says what it builds before its first code, and ends with exercises for the reader."
    cells = [cell for cell in nbformat.read(lesson, as_version=4).cells if cell.source.strip()]
    body = cells[1:]  # after the frontmatter cell
    code = [i for i, cell in enumerate(body) if cell.cell_type == "code" and not cell.source.startswith("#| default_exp")]
    first_code = code[0] if code else len(body)
    opening = [cell for cell in body[:first_code] if cell.cell_type == "markdown"]
    assert opening, f"{lesson.name} starts with code, not with what it builds"
    last_markdown = [cell.source for cell in body if cell.cell_type == "markdown"][-1]
    assert re.search(r"^#+ .*exercises", last_markdown, flags=re.IGNORECASE | re.MULTILINE), \
        f"{lesson.name} does not end with an Exercises section"


@pytest.mark.parametrize("page", _page_params())
def test_relative_links_and_images_resolve(page):
    broken = []
    for markdown in check_site.markdown_texts(page):
        for kind, target in check_site.relative_targets(markdown):
            if not check_site.target_exists(page, target, NBS):
                broken.append(f"{kind} {target}")
    assert broken == [], f"{page.relative_to(REPO)} has broken relative links or images: {broken}"


def test_link_checker_finds_broken_targets(tmp_path):
    page = tmp_path / "page.qmd"
    (tmp_path / "figure.png").write_bytes(b"")
    (tmp_path / "03_audio.ipynb").write_text("{}")
    markdown = ("![ok](figure.png) ![missing](gone.png) [lesson](03_audio.ipynb#mu-law) [page](audio.html) "
                "[web](https://example.org) [anchor](#top) `[code](not-a-link.md)`\n"
                "```\n[fenced](also-not-a-link.md)\n```\n<img src=\"lost.svg\">")
    page.write_text(markdown)
    targets = check_site.relative_targets(markdown)
    assert ("image", "figure.png") in targets
    assert all("not-a-link" not in target for _, target in targets)
    broken = [target for _, target in targets if not check_site.target_exists(page, target, tmp_path)]
    assert broken == ["gone.png", "lost.svg"]


def test_nbdev_proc_nbs_succeeds(tmp_path):
    "Process every notebook for Quarto, as `nbdev-docs` does first, on a copy of the project."
    failures, proc_path = check_site.process_notebooks(tmp_path, timeout_s=600)
    assert failures == [], "\n".join(failures)
    processed = {path.relative_to(proc_path) for path in proc_path.rglob("*") if path.is_file()}
    for page in check_site.site_pages(NBS):
        assert page.relative_to(NBS) in processed, f"nbdev-proc-nbs did not write {page.relative_to(NBS)}"
