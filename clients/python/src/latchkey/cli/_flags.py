"""`latchkey flags`: evaluate and list OpenFeature flags kept as flagd flag sets in Consul KV
(the same provider and evaluator an application uses: `latchkey.openfeature`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

import latchkey
from latchkey.cli import _output as out

if TYPE_CHECKING:
    from latchkey.openfeature import LatchkeyProvider

MISSING_EXTRA = (
    "`latchkey flags` needs the openfeature extra: pip install 'latchkey[openfeature]' "
    "(make install sets it up in .venv)"
)


@contextmanager
def _provider(client: latchkey.Client, prefix: str) -> Iterator[LatchkeyProvider]:
    try:
        from openfeature.evaluation_context import EvaluationContext

        from latchkey.openfeature import LatchkeyProvider
    except ImportError as exc:
        raise click.ClickException(MISSING_EXTRA) from exc
    provider = LatchkeyProvider(client, prefix)
    provider.initialize(EvaluationContext())
    try:
        for key in provider.invalid_sets:
            click.echo(f"warning: {key} is not a valid flagd flag set; it is ignored", err=True)
        yield provider
    finally:
        provider.shutdown()


def _parse_context(pairs: tuple[str, ...]) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{pair!r}: expected KEY=VALUE", param_hint="--context")
        attributes[name] = _typed(value)
    return attributes


def _typed(value: str) -> Any:
    """`true`/`false` and numbers as such (targeting rules compare typed values), else text."""
    if value in ("true", "false"):
        return value == "true"
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


@click.group()
def flags() -> None:
    """Feature flags (OpenFeature, flagd flag sets in Consul KV)."""


@flags.command("eval")
@click.argument("prefix")
@click.argument("flag")
@click.option("--targeting-key", default="", help="The user (or other subject) to evaluate for.")
@click.option(
    "--context",
    "context_pairs",
    multiple=True,
    metavar="KEY=VALUE",
    help="An evaluation context attribute (repeatable); true/false and numbers are typed.",
)
@out.format_option("table", "json", default="table")
@click.pass_obj
def flags_eval(
    ctx: Any,
    prefix: str,
    flag: str,
    targeting_key: str,
    context_pairs: tuple[str, ...],
    fmt: str,
) -> None:
    """Evaluate FLAG from the flag sets under PREFIX, as an application's provider would.

    \b
    Example:
      latchkey flags eval flags/production/ new_ui --targeting-key user-42 --context plan=pro
    """
    from openfeature.evaluation_context import EvaluationContext
    from openfeature.exception import OpenFeatureError

    attributes = _parse_context(context_pairs)
    evaluation = EvaluationContext(targeting_key=targeting_key or None, attributes=attributes)
    with ctx.client() as client, _provider(client, prefix) as provider:
        try:
            result = provider.resolve(flag, evaluation)
        except OpenFeatureError as exc:
            raise latchkey.NotFound(exc.error_message or str(exc)) from exc
    doc = {
        "flag": flag,
        "value": result.value,
        "variant": result.variant,
        "reason": str(result.reason or ""),
        "targeting_key": targeting_key,
    }
    out.emit(doc, fmt, None, ["flag", "value", "variant", "reason"])


@flags.command("list")
@click.argument("prefix")
@out.format_option("table", "json", default="table")
@click.pass_obj
def flags_list(ctx: Any, prefix: str, fmt: str) -> None:
    """Every flag defined by the flag sets under PREFIX.

    \b
    Example:
      latchkey flags list flags/production/
    """
    with ctx.client() as client, _provider(client, prefix) as provider:
        rows = [
            {
                "flag": f.key,
                "flag_set": f.flag_set,
                "state": f.state,
                "default_variant": f.default_variant,
                "variants": dict(f.variants),
                "targeting": f.targeting,
            }
            for f in provider.flags()
        ]
    out.emit(rows, fmt, None, ["flag", "flag_set", "state", "default_variant", "targeting"])
