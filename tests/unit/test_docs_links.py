"""Every relative link in the Markdown a user reads leads somewhere: the file exists and,
with a ``#fragment``, the heading does (GitHub's anchors)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted(
    [ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("examples/*/README.md"),
     ROOT / "benchmarks" / "README.md"]
)  # fmt: skip
_LINK = re.compile(r"\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)


def anchors(page: Path) -> set[str]:
    """GitHub's anchors of ``page``'s headings: lower case, punctuation dropped, spaces to
    hyphens, repeats numbered."""
    seen: dict[str, int] = {}
    found = set()
    for line in _FENCE.sub("", page.read_text()).splitlines():
        if not line.startswith("#"):
            continue
        text = line.lstrip("#").strip().lower()
        slug = re.sub(r"[^\w\- ]", "", text).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def links(page: Path) -> list[str]:
    return [m for m in _LINK.findall(_FENCE.sub("", page.read_text()))
            if not re.match(r"[a-z][a-z0-9+.-]*:", m)]  # fmt: skip


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_relative_link_leads_to_a_file_and_heading(page: Path) -> None:
    broken = []
    for link in links(page):
        target, _, fragment = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        if not path.exists():
            broken.append(
                f"{link}: no {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}"
            )
        elif fragment and path.suffix == ".md" and fragment not in anchors(path):
            broken.append(f"{link}: no heading #{fragment} in {path.name}")
    assert not broken, "\n".join(broken)


def test_the_anchor_rule_matches_githubs() -> None:
    page = ROOT / "docs" / "identity.md"
    assert {"the-same-identity-on-the-control-plane", "static-local-development-only",
            "tofuflow-audit-credentials", "aws"} <= anchors(page)  # fmt: skip
