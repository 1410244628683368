"""The manual holds together: every relative link and anchor in README.md and docs/ resolves, and
the README's set-up and test commands are the ones CI (`.ci/run`) runs.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _prose(text: str) -> str:
    """The text outside fenced code blocks and inline code (links there are not links)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (not hyphens), spaces to hyphens."""
    s = heading.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.M | re.S)
    seen: dict[str, int] = {}
    out = set()
    for m in re.finditer(r"^#{1,6} +(.+?) *#*$", text, flags=re.M):
        base = slug(m.group(1))
        n = seen.get(base, 0)
        out.add(base if n == 0 else f"{base}-{n}")
        seen[base] = n + 1
    return out


def test_slug_follows_github():
    assert slug("AOTInductor packages (`--backend aoti`)") == "aotinductor-packages---backend-aoti"
    assert slug("Online latency: the C++ session vs the Python session") == (
        "online-latency-the-c-session-vs-the-python-session"
    )


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_and_anchors_resolve(page: Path):
    broken = []
    for target in LINK.findall(_prose(page.read_text())):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
            continue
        if anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading with anchor #{anchor} in {dest.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_every_docs_page_is_in_the_index_and_says_what_it_is_for():
    index = (ROOT / "docs" / "index.md").read_text()
    for page in sorted((ROOT / "docs").glob("*.md")):
        if page.name == "index.md":
            continue
        assert f"]({page.name})" in index, f"docs/index.md does not list {page.name}"
        lines = [ln for ln in page.read_text().splitlines() if ln.strip()]
        assert lines[0].startswith("# ") and not lines[1].startswith("#"), f"{page.name}: no opening paragraph"


def _readme_commands() -> list[list[str]]:
    """The README's set-up commands: each line of the Install block, split at `&&`."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Install", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)
    lines = [ln.strip() for ln in block.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    return [[_norm(part) for part in ln.split("&&")] for ln in lines]


def _norm(cmd: str) -> str:
    """A command as CI and a user would both write it: no `python -m`, no `-q`, no venv path prefix."""
    words = shlex.split(cmd)
    words = [w for w in words if w != "-q"]
    if words and words[0].endswith("/python") or words[:1] == ["python"] or words[:1] == ["python3"]:
        if words[1:2] == ["-m"]:
            words = words[2:]
    if words and "/" in words[0]:
        words[0] = words[0].rsplit("/", 1)[1]
    return " ".join(words)


def _ci_commands() -> list[str]:
    lines = []
    for ln in (ROOT / ".ci" / "run").read_text().splitlines():
        ln = ln.strip()
        if not ln or ln.startswith("#"):
            continue
        ln = re.sub(r"^\(cd [^)&]+&& *", "", ln).rstrip(")")
        try:
            lines.append(_norm(ln))
        except ValueError:
            continue
    return lines


def test_readme_setup_commands_are_the_ones_ci_runs():
    commands = _readme_commands()
    assert len(commands) == 2, "the README's Install block has the two set-up commands"
    ci = _ci_commands()
    for command in commands:
        pos = 0
        for part in command:
            hits = [i for i, line in enumerate(ci) if i >= pos and line.startswith(part)]
            assert hits, f"README runs {part!r}; .ci/run does not (after line {pos} of its commands)"
            pos = hits[0] + 1
    assert commands[1][-1] == "pytest tests", "the second command ends with the test command"
