"""Result tables of the benchmarks and their Markdown and JSON renderings.

A ``Table`` is one benchmark's result: its setup, a header and rows of cells. A cell is
text, a number, a ``Summary`` of several runs (shown as the median with the minimum and
maximum) or None (shown as a dash). Rendering is pure, so the tests check it directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bench.stats import Summary

Cell = str | int | float | Summary | None


@dataclass
class Table:
    """The result of one benchmark."""

    name: str
    title: str
    columns: list[str]
    setup: list[str] = field(default_factory=list)
    rows: list[list[Cell]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    measured_at: str = ""

    def add_row(self, *cells: Cell) -> None:
        """Append a row; raise ValueError when its width differs from the header."""
        if len(cells) != len(self.columns):
            raise ValueError(
                f"row of {len(cells)} cells for table {self.name!r} with "
                f"{len(self.columns)} columns ({', '.join(self.columns)}); give one cell per column"
            )
        self.rows.append(list(cells))


@dataclass
class Report:
    """Every table of one run of the benchmarks, with the machine that ran them."""

    title: str
    generated_at: str
    mode: str
    machine: dict[str, str]
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def format_number(value: float) -> str:
    """Format a measured number with thousands separators and about three digits."""
    magnitude = abs(value)
    if float(value).is_integer():
        return f"{int(value):,}"
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    if magnitude == 0:
        return "0"
    return f"{value:.3f}"


def format_ratio(value: float | None) -> str:
    """Format a ratio of two rates as ``12.3x``, or a dash when it is unknown."""
    if value is None:
        return "-"
    return f"{format_number(value)}x"


def format_percent(value: float | None) -> str:
    """Format a fraction as a whole percentage, or a dash when it is unknown."""
    if value is None:
        return "-"
    return f"{value * 100:.0f}%"


def format_cell(cell: Cell) -> str:
    """Format one cell: a Summary as ``median (min-max)``, or ``median`` after one run."""
    if cell is None:
        return "-"
    if isinstance(cell, Summary):
        median = format_number(cell.median)
        if cell.runs == 1:
            return median
        return f"{median} ({format_number(cell.minimum)}-{format_number(cell.maximum)})"
    if isinstance(cell, bool):
        return "yes" if cell else "no"
    if isinstance(cell, int | float):
        return format_number(cell)
    return cell


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_table(table: Table) -> str:
    """Render one table as a Markdown section: title, setup, the table and its notes."""
    lines = [f"## {table.title}", ""]
    setup = list(table.setup)
    if table.measured_at:
        setup.append(f"Measured {table.measured_at}.")
    if setup:
        lines.extend(f"- {item}" for item in setup)
        lines.append("")
    lines.append("| " + " | ".join(_escape(column) for column in table.columns) + " |")
    lines.append("|" + "|".join(" --- " for _ in table.columns) + "|")
    for row in table.rows:
        lines.append("| " + " | ".join(_escape(format_cell(cell)) for cell in row) + " |")
    if table.notes:
        lines.append("")
        lines.extend(table.notes)
    lines.append("")
    return "\n".join(lines)


def render_markdown(report: Report) -> str:
    """Render the whole report as Markdown."""
    lines = [f"# {report.title}", ""]
    lines.append(
        f"Generated {report.generated_at} by a {report.mode} run. Each table states when and "
        "in which mode it was measured, because `--only` keeps the other tables of a report."
    )
    lines.append("")
    lines.append("| Machine | |")
    lines.append("| --- | --- |")
    for key, value in report.machine.items():
        lines.append(f"| {_escape(key)} | {_escape(value)} |")
    lines.append("")
    if report.notes:
        lines.extend(report.notes)
        lines.append("")
    body = "\n".join(lines)
    sections = [render_table(table) for table in report.tables]
    return body + "\n" + "\n".join(sections)


def _cell_json(cell: Cell) -> Any:
    if isinstance(cell, Summary):
        return cell.as_json()
    return cell


def report_json(report: Report) -> dict[str, Any]:
    """Return the report as JSON-ready data, keeping every run's raw value."""
    return {
        "title": report.title,
        "generated_at": report.generated_at,
        "mode": report.mode,
        "machine": report.machine,
        "notes": report.notes,
        "tables": [
            {
                "name": table.name,
                "title": table.title,
                "setup": table.setup,
                "columns": table.columns,
                "rows": [
                    dict(zip(table.columns, (_cell_json(cell) for cell in row), strict=True))
                    for row in table.rows
                ],
                "notes": table.notes,
                "measured_at": table.measured_at,
            }
            for table in report.tables
        ],
    }


def _cell_from_json(value: Any) -> Cell:
    if isinstance(value, dict) and "values" in value:
        return Summary.of(float(item) for item in value["values"])
    if value is None or isinstance(value, str | int | float):
        return value
    return str(value)


def tables_from_json(data: dict[str, Any]) -> list[Table]:
    """Rebuild the tables of a report written by ``report_json``."""
    tables = []
    for item in data.get("tables", []):
        columns = list(item["columns"])
        table = Table(
            name=item["name"],
            title=item["title"],
            columns=columns,
            setup=list(item.get("setup", [])),
            notes=list(item.get("notes", [])),
            measured_at=item.get("measured_at", ""),
        )
        for row in item.get("rows", []):
            table.add_row(*(_cell_from_json(row.get(column)) for column in columns))
        tables.append(table)
    return tables
