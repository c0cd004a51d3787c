"""docs/data-model.md shows the schema the models define, and nothing older."""

from __future__ import annotations

from pathlib import Path

from troupe.storage.diagram import mermaid
from troupe.storage.tables import Base

DOC = Path(__file__).parents[2] / "docs" / "data-model.md"


def test_the_documented_diagram_is_the_one_the_models_generate() -> None:
    text = DOC.read_text()
    block = text.split("```mermaid\n", 1)[1].split("```", 1)[0]
    assert block == mermaid(), "docs/data-model.md is stale: run `troupe db diagram`"


def test_the_diagram_shows_every_table_and_foreign_key() -> None:
    diagram = mermaid()
    for table in Base.metadata.tables.values():
        assert f"    {table.name} {{" in diagram
        for fk in table.foreign_keys:
            assert f'{fk.column.table.name} ||--o{{ {table.name} : "{fk.parent.name}"' in diagram
    assert "        string prefix UK" in diagram  # api_keys.prefix is unique
    assert "        string session_id FK" in diagram
