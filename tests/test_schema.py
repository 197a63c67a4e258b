"""``schema.graphql`` is generated from the code; this fails when they differ."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from api.schema import schema

SCHEMA_FILE = Path(__file__).parent.parent / "schema.graphql"


def test_schema_file_matches_the_code() -> None:
    assert SCHEMA_FILE.read_text(encoding="utf-8") == schema.as_str() + "\n", (
        "schema.graphql is out of date: run `make schema` (tradestream export-schema)"
    )


def test_export_schema_command_writes_the_sdl(tmp_path: Path) -> None:
    output = tmp_path / "schema.graphql"
    subprocess.run(
        [sys.executable, "-m", "api.cli", "export-schema", "--output", str(output)], check=True
    )
    assert output.read_text(encoding="utf-8") == SCHEMA_FILE.read_text(encoding="utf-8")

    stdout = subprocess.run(
        [sys.executable, "-m", "api.cli", "export-schema", "-o", "-"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert stdout == output.read_text(encoding="utf-8")
