"""Rendering for the CLI: tables for people, JSON for scripts, bare values with `--field`."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

import click

REDACTED = "********"
FC = TypeVar("FC", bound=Callable[..., Any])


def format_option(*choices: str, default: str, help: str = "Output format.") -> Callable[[FC], FC]:
    """The `--format` option of a command (its value arrives as `fmt`)."""
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(list(choices)),
        default=default,
        show_default=True,
        help=help,
    )


def plain(value: Any) -> Any:
    """JSON-able form of a value."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def _cell(value: Any) -> str:
    value = plain(value)
    if value is None:
        return "-"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c.upper())] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def emit(
    data: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    fmt: str,
    field: str | None,
    columns: Sequence[str],
) -> None:
    """Print one document: a table, JSON, or with `field` the bare value(s) of one field."""
    rows = [data] if isinstance(data, Mapping) else list(data)
    if field is not None:
        for row in rows:
            if field not in row:
                known = ", ".join(sorted(row))
                raise click.UsageError(f"no field {field!r}; fields are: {known}")
            value = plain(row[field])
            click.echo(value if isinstance(value, str) else json.dumps(value))
        return
    if fmt == "json":
        click.echo(json.dumps(plain(data), indent=2, sort_keys=True))
    else:
        click.echo(table(rows, columns))


def emit_line(obj: Mapping[str, Any], fmt: str) -> None:
    """One event of a watch: a JSON object per line (or a short text line), flushed."""
    if fmt == "json":
        sys.stdout.write(json.dumps(plain(obj), sort_keys=True) + "\n")
    else:
        sys.stdout.write("  ".join(f"{k}={_cell(v)}" for k, v in obj.items()) + "\n")
    sys.stdout.flush()


def emit_document(doc: Mapping[str, Any], fmt: str) -> None:
    """One nested document as JSON or YAML (block style, keys sorted)."""
    if fmt == "yaml":
        import yaml  # the `cli` extra's PyYAML; only this command needs it

        click.echo(yaml.safe_dump(plain(doc), sort_keys=True, default_flow_style=False), nl=False)
    else:
        click.echo(json.dumps(plain(doc), indent=2, sort_keys=True))
