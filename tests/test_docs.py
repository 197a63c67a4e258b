"""The GraphQL in the docs is GraphQL this server answers: every ```graphql block of README.md
and docs/*.md parses and validates against the schema (so a renamed field or argument breaks the
build, not the reader)."""

from __future__ import annotations

import importlib
import itertools
import re
from pathlib import Path

import pytest
from graphql import parse, validate

from api.schema import build_schema

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SCHEMA = build_schema()
SCHEMA_TEXT = ("type ", "interface ", "union ", "enum ", "scalar ", "input ")
"""Blocks that show schema definitions (checked by test_schema against schema.graphql)."""
BLOCK = re.compile(r"```graphql\n(.*?)```", re.DOTALL)


def blocks() -> list[tuple[str, str]]:
    found = []
    for path in DOCUMENTS:
        for number, match in enumerate(BLOCK.finditer(path.read_text()), start=1):
            if not match.group(1).lstrip().startswith(SCHEMA_TEXT):
                found.append((f"{path.relative_to(ROOT)}#{number}", match.group(1)))
    return found


def test_the_docs_have_graphql_to_check() -> None:
    assert len(blocks()) >= 15


@pytest.mark.parametrize(("where", "text"), blocks(), ids=[w for w, _ in blocks()])
def test_every_graphql_block_in_the_docs_validates_against_the_schema(
    where: str, text: str
) -> None:
    errors = validate(SCHEMA._schema, parse(text))
    assert not errors, f"{where}: {[e.message for e in errors]}"


# The prose the code cannot check by itself: the README's feed table against the schema, the
# module table of docs/architecture.md against the packages, and every path, dotted name and
# link the docs give against what exists.

PACKAGES = ("api", "domain")
"""Every module under these (nested packages included) has a row in docs/architecture.md."""
PATH = re.compile(r"(?<![\w./-])((?:api|domain|tests|bench|examples|deploy|docs)/[\w./*-]*)")
"""A repository path in a code span, such as ``api/feeds/perps/schema.py`` or
``api/storage/migrations/*.sql``."""
FENCE = re.compile(r"^(```|~~~).*?^\1", re.DOTALL | re.MULTILINE)
CODE_SPAN = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def prose(path: Path) -> str:
    """The file without its fenced code blocks (their lines stay, empty, so line numbers hold)."""
    return FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), path.read_text())


def section(path: Path, heading: str) -> str:
    text = prose(path)
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def table(text: str) -> list[list[str]]:
    """The body rows of the first Markdown table in ``text``, as stripped cells."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = list(itertools.takewhile(lambda line: line.startswith("|"), lines[start:]))
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[2:]]


def tables(text: str) -> list[list[str]]:
    """The body rows of every Markdown table in ``text``, as stripped cells."""
    groups = itertools.groupby(text.splitlines(), key=lambda line: line.startswith("|"))
    return [row for is_table, lines in groups if is_table for row in table("\n".join(lines))]


def feed_rows() -> dict[str, list[str]]:
    """The README's feed table by subscription field: its cells."""
    rows = {}
    for cells in table(section(ROOT / "README.md", "Feeds")):
        spans = CODE_SPAN.findall(cells[0])
        assert spans, f"a feed row names no field: {cells[0]!r}"
        rows[spans[0].split("(")[0]] = cells
    return rows


SUBSCRIPTIONS = SCHEMA._schema.subscription_type.fields if SCHEMA._schema.subscription_type else {}


def test_the_readme_feed_table_has_a_row_per_subscription_of_the_schema() -> None:
    documented = set(feed_rows())
    assert SUBSCRIPTIONS, "the schema has no subscriptions"
    assert not set(SUBSCRIPTIONS) - documented, "add these to README.md's feed table"
    assert not documented - set(SUBSCRIPTIONS), "no longer in the schema: drop them from README.md"


@pytest.mark.parametrize("field", sorted(SUBSCRIPTIONS))
def test_each_feed_row_shows_the_arguments_resume_and_access_of_its_field(field: str) -> None:
    from api.schema import PUBLIC_SUBSCRIPTIONS

    name, _streams, who, delivery, described_in = feed_rows()[field]
    arguments = re.findall(r"(\w+):", CODE_SPAN.findall(name)[0])
    assert arguments == list(SUBSCRIPTIONS[field].args), f"{field}: arguments as in the schema"
    resumable = "after" in SUBSCRIPTIONS[field].args
    assert ("resumable with `after:`" in delivery) == resumable, f"{field}: resumable or not"
    assert delivery.startswith("stream" if resumable else "latest value"), field
    assert (who == "public") == (field in PUBLIC_SUBSCRIPTIONS), f"{field}: public or not"
    assert LINK.search(described_in), f"{field}: link the page that describes it"


def modules() -> set[str]:
    return {
        path.relative_to(ROOT).as_posix()
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if path.name != "__init__.py"
    }


def test_the_architecture_names_every_module_of_api_and_domain() -> None:
    rows = tables(section(ROOT / "docs" / "architecture.md", "Modules"))
    named = {CODE_SPAN.findall(cells[0])[0]: cells[1] for cells in rows}
    assert len(modules()) > 40, "the walk found too few modules"
    assert not modules() - set(named), "add a row for each to docs/architecture.md#modules"
    gone = {path for path in named if not (ROOT / path).is_file()}
    assert not gone, "no longer exist: drop or rename their rows in docs/architecture.md"
    assert all(len(line) > 20 for line in named.values()), "say what each module holds"


def code_spans() -> list[tuple[str, str]]:
    """Every inline code span of the docs, outside fenced blocks, with where it is."""
    return [
        (f"{path.relative_to(ROOT)}:{text[: match.start()].count(chr(10)) + 1}", match.group(1))
        for path in DOCUMENTS
        for text in [prose(path)]
        for match in CODE_SPAN.finditer(text)
    ]


def test_every_path_the_docs_name_exists() -> None:
    checked, missing = 0, []
    for where, span in code_spans():
        for path in PATH.findall(span):
            path = path.rstrip(".")
            checked += 1
            if not ((ROOT / path).exists() or ("*" in path and any(ROOT.glob(path)))):
                missing.append(f"{where}: {path}")
    assert checked > 50
    assert not missing


def test_every_dotted_api_or_domain_name_in_the_docs_resolves() -> None:
    checked, missing = 0, []
    for where, span in code_spans():
        match = re.match(r"((?:api|domain)(?:\.\w+)+)", span)
        if match is None:
            continue
        checked += 1
        parts = match.group(1).split(".")
        for cut in range(len(parts), 0, -1):
            try:
                found: object = importlib.import_module(".".join(parts[:cut]))
            except ModuleNotFoundError:
                continue
            for attribute in parts[cut:]:
                found = getattr(found, attribute, None)
            if found is None:
                missing.append(f"{where}: {match.group(1)}")
            break
        else:
            missing.append(f"{where}: {match.group(1)}")
    assert checked > 5
    assert not missing


def anchors(path: Path) -> set[str]:
    """GitHub's ids for the headings of ``path``."""
    ids: set[str] = set()
    for heading in re.findall(r"^#+ (.+)$", prose(path), re.MULTILINE):
        base = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        slug, number = base, 0
        while slug in ids:
            number += 1
            slug = f"{base}-{number}"
        ids.add(slug)
    return ids


def test_every_link_between_the_docs_reaches_a_file_and_a_heading() -> None:
    checked, broken = 0, []
    for path in DOCUMENTS:
        for target in LINK.findall(prose(path)):
            if re.match(r"[a-z]+:", target):
                continue  # http:, https:, mailto:
            file, _, anchor = target.partition("#")
            destination = (path.parent / file).resolve() if file else path
            checked += 1
            if not destination.exists():
                broken.append(f"{path.relative_to(ROOT)}: {target}")
            elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
                broken.append(f"{path.relative_to(ROOT)}: {target} (no such heading)")
    assert checked > 30
    assert not broken
