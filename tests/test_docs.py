"""The GraphQL in the docs is GraphQL this server answers: every ```graphql block of README.md
and docs/*.md parses and validates against the schema (so a renamed field or argument breaks the
build, not the reader)."""

from __future__ import annotations

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
