"""The documentation holds together: README.md is short, every relative link in it and in docs/ resolves to a file or
folder of the repository, and every page under docs/ can be reached from README.md by following links."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers.paths import REPO

README = REPO / "README.md"
DOCS = REPO / "docs"
MAX_README_LINES = 220

FENCE = re.compile(r"^[ \t]*(```|~~~).*?^[ \t]*\1[^\n]*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(`+)((?:[^`\n]|\n(?![ \t]*\n))+?)\1(?!`)")  # may wrap lines, not cross a paragraph
# [text](target) or [text](target "title"); the text may hold nested brackets (an image inside a link) or code.
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(?:<([^<>\n]*)>|([^)\s]+))(?:\s+[\"'(][^)]*)?\)")
REFERENCE_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)
EXTERNAL = re.compile(r"^(?:[a-zA-Z][a-zA-Z0-9+.-]*:|//)")  # http:, https:, mailto:, ... and protocol-relative


def pages() -> list[Path]:
    """README.md and every Markdown page under docs/."""
    return [README, *sorted(DOCS.rglob("*.md"))]


def link_targets(markdown: str) -> list[str]:
    """Every link target of a Markdown text (inline links, images and reference definitions), code left out: a
    fenced block or a code span is not a link, whatever it holds."""
    text = FENCE.sub("", markdown)
    text = CODE_SPAN.sub(lambda m: "x" * len(m.group(2)), text)
    inline = [bracketed or bare for bracketed, bare in INLINE_LINK.findall(text)]
    return inline + REFERENCE_DEFINITION.findall(text)


def local_target(page: Path, target: str, root: Path = REPO) -> Path | None:
    """The file or folder a relative link points to (its ``#anchor`` and ``?query`` stripped), or None for an
    external link (a scheme such as http, https or mailto) or a link to an anchor of the page itself."""
    if EXTERNAL.match(target) or target.startswith("#"):
        return None
    path = target.split("#", 1)[0].split("?", 1)[0]
    if path.startswith("/"):  # as GitHub reads it: from the repository root
        return (root / path.lstrip("/")).resolve()
    return (page.parent / path).resolve()


def broken_links(page: Path, root: Path = REPO) -> list[str]:
    """The relative links of ``page`` that name nothing inside ``root`` (the repository), as ``page: target``."""
    root = root.resolve()
    broken = []
    for target in link_targets(page.read_text(encoding="utf-8")):
        resolved = local_target(page, target, root)
        if resolved is None:
            continue
        if not resolved.is_relative_to(root) or not resolved.exists():
            broken.append(f"{page.resolve().relative_to(root).as_posix()}: {target}")
    return broken


def reachable_pages(start: Path, root: Path = REPO) -> set[Path]:
    """The Markdown pages reachable from ``start`` by following relative links (a link to a folder reaches its
    README.md, as GitHub shows it)."""
    seen, todo = set(), [start.resolve()]
    while todo:
        page = todo.pop()
        if page in seen:
            continue
        seen.add(page)
        for target in link_targets(page.read_text(encoding="utf-8")):
            resolved = local_target(page, target, root)
            if resolved is None:
                continue
            if resolved.is_dir():
                resolved = resolved / "README.md"
            if resolved.suffix == ".md" and resolved.is_file():
                todo.append(resolved)
    return seen


# ---------------------------------------------------------------------------------------- the checkers themselves


def test_link_extraction_finds_links_and_skips_code_and_external_targets():
    text = """See [the page](docs/a.md#part), ![figure](img/f.png "title") and [`code` text](<docs/b c.md>).
[ref]: docs/c.md
Skipped: [web](https://example.org/x), [mail](mailto:a@b.c), [here](#anchor), `[not](a link.md)`.

```bash
echo "[not](in-a-fence.md)"
```
"""
    assert link_targets(text) == ["docs/a.md#part", "img/f.png", "docs/b c.md", "https://example.org/x",
                                  "mailto:a@b.c", "#anchor", "docs/c.md"]
    page = REPO / "README.md"
    assert local_target(page, "https://example.org/x") is None
    assert local_target(page, "mailto:a@b.c") is None
    assert local_target(page, "#anchor") is None
    assert local_target(page, "docs/a.md#part") == REPO / "docs" / "a.md"


def test_a_broken_link_is_reported(tmp_path):
    """The checker fails on what it must fail on: a missing file, a missing folder, a link out of the repository."""
    (tmp_path / "docs" / "how-to").mkdir(parents=True)
    (tmp_path / "docs" / "how-to" / "real.md").write_text("# Real\n[back](../../README.md)\n")
    page = tmp_path / "README.md"
    page.write_text("[ok](docs/how-to/real.md#top) [folder](docs/how-to/) [gone](docs/how-to/gone.md)\n"
                    "[no folder](docs/nothing/) [outside](../elsewhere.md) [web](https://example.org)\n")
    assert broken_links(page, tmp_path) == ["README.md: docs/how-to/gone.md", "README.md: docs/nothing/",
                                            "README.md: ../elsewhere.md"]
    assert reachable_pages(page, tmp_path) == {page.resolve(), (tmp_path / "docs" / "how-to" / "real.md").resolve()}


# ------------------------------------------------------------------------------------------------ the repository


def test_readme_is_a_front_door_not_a_log():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; move detail into docs/"


def test_docs_exist_and_links_were_found():
    """Guards the tests below against passing on nothing: docs/ has its pages and the README links into them."""
    assert len(list(DOCS.rglob("*.md"))) >= 5
    readme_targets = [t for t in link_targets(README.read_text(encoding="utf-8")) if local_target(README, t)]
    assert len(readme_targets) >= 5
    assert any(t.startswith("docs/") for t in readme_targets)


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_resolves(page):
    assert broken_links(page) == []


def test_every_docs_page_is_reachable_from_the_readme():
    reachable = reachable_pages(README)
    orphans = sorted(p.relative_to(REPO).as_posix() for p in DOCS.rglob("*.md") if p.resolve() not in reachable)
    assert orphans == [], f"not linked from README.md or a page reachable from it: {orphans}"


def test_the_bad_inputs_page_is_the_one_the_matrix_generates():
    """docs/reference/bad-inputs.md is rendered from the hostile-input matrix that the container tests run
    (tests/helpers/hostile_inputs.py); regenerate it with `python -m tests.helpers.hostile_inputs` from the repository
    root after changing the matrix."""
    from helpers.hostile_inputs import PAGE, render_page

    assert PAGE.read_text() == render_page(), (
        "docs/reference/bad-inputs.md is stale: run python -m tests.helpers.hostile_inputs")
