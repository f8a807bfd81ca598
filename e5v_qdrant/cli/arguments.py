"""The options bridge: config dataclasses (``config``) -> argparse options, so each command's ``--help`` is
generated from the one declaration of every option (help, default, choices, scope, checks, deprecated flags).

Example:
    >>> import argparse
    >>> from e5v_qdrant.config import StoreConfig
    >>> parser = argparse.ArgumentParser()
    >>> add_arguments(parser, StoreConfig, scopes=())  # connection options only
    >>> "--quantization" in parser.format_help(), "--qdrant-path" in parser.format_help()
    (False, True)
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
import warnings
from collections.abc import Callable
from typing import Any

from ..collection_names import check_collection_name
from ..errors import E5VConfigError
from ..options import flag_of

__all__ = ["add_arguments", "checked", "collection_name"]


def checked(check: Callable[[Any], None], convert: Callable[[str], Any] = str) -> Callable[[str], Any]:
    """An argparse ``type`` that converts a typed value and runs ``check`` on it; an ``E5VConfigError`` becomes a
    usage error (exit 2, the message names the option)."""

    def parse(text: str):
        value = convert(text)
        try:
            check(value)
        except E5VConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return value

    parse.__name__ = getattr(convert, "__name__", "value")  # argparse names it in "invalid <name> value" errors
    return parse


#: The argparse ``type`` of every command's ``--collection`` (ingest's is declared on ``IngestConfig.collection``).
collection_name = checked(check_collection_name)


class _DeprecatedFlag(argparse.Action):
    """An old flag of an option: stores like the option and warns (``FutureWarning``) naming the new flag."""

    def __init__(self, option_strings, dest, *, replacement: str, **kwargs):
        self.replacement = replacement
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        warnings.warn(
            f"{option_string} is deprecated here, use {self.replacement} (same meaning)", FutureWarning, stacklevel=2
        )
        setattr(namespace, self.dest, values)


def _unwrap_optional(tp):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _default_of(f: dataclasses.Field) -> Any:
    """The default a command line gets: the field's ``cli_default``, else its default (or default factory)."""
    cli_default = f.metadata.get("cli_default", dataclasses.MISSING)
    if cli_default is not dataclasses.MISSING:
        return cli_default
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else None


def _help_of(f: dataclasses.Field, tp, recorded_default: str | None) -> str:
    """The help text with its default: "(default: X)" unless the help states it or there is none; options that change
    vectors, for commands that read them from a collection, default to ``recorded_default``, else X."""
    help_text = f.metadata.get("help", "")
    default = _default_of(f)
    shown = None
    if default not in (None, "", []):
        if tp is bool:
            shown = "on" if default else "off"
        else:
            shown = " ".join(map(str, default)) if isinstance(default, list) else str(default)
    if recorded_default and f.metadata.get("vectors"):
        if "default: " in help_text:  # the help states its default in its own words
            return help_text.replace("default: ", f"default: {recorded_default}, else ", 1)
        return f"{help_text} (default: {recorded_default}" + (f", else {shown})" if shown else ")")
    if shown is None or "default:" in help_text.lower():
        return help_text
    return f"{help_text} (default: {shown})"


def add_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    *,
    exclude: tuple[str, ...] = (),
    only: tuple[str, ...] | None = None,
    group: str | None = None,
    recorded_default: str | None = None,
    scopes: tuple[str, ...] | None = None,
) -> None:
    """Add one ``--option`` per field of dataclass ``cls`` (help, default and choices from the field).

    Args:
        exclude: fields not offered.
        only: offer just these fields (``None`` = all but ``exclude``).
        group: title of an argument group to put them in.
        recorded_default: what options that change vectors default to (e.g. "as recorded in the collection"), for
            commands that take them from a collection's stamp; the field's own default is shown after it ("else X").
        scopes: offer only fields without a ``scope`` and those whose scope is listed (``None`` = every field).

    Defaults are appended to the help text once, unless the help already states its default or the default is empty
    (``None``, ``""``, ``[]``). A field's ``cli_default`` replaces its default on the command line. argparse only
    records what the user typed; ``config.from_namespace`` fills the rest (``cli_default``, then the field's default).
    """
    target = parser.add_argument_group(group) if group and hasattr(parser, "add_argument_group") else parser
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in exclude or (only is not None and f.name not in only) or not f.metadata.get("cli", True):
            continue
        if scopes is not None and f.metadata.get("scope") not in (None, *scopes):
            continue
        flag = flag_of(f)
        tp = _unwrap_optional(hints[f.name])
        help_text = _help_of(f, tp, recorded_default)
        if tp is bool:
            target.add_argument(
                flag, dest=f.name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text
            )
            continue
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS}
        if f.metadata.get("choices"):
            kwargs["choices"] = f.metadata["choices"]
        convert = tp if tp in (int, float) else str
        if tp in (int, float):
            kwargs["metavar"] = "N"
        elif f.name.endswith("_env"):
            kwargs["metavar"] = "VAR"
        elif typing.get_origin(tp) in (list, tuple):
            if f.metadata.get("repeatable"):
                kwargs["action"] = "append"
            else:
                kwargs["nargs"] = "+"
        if f.metadata.get("metavar"):
            kwargs["metavar"] = f.metadata["metavar"]
        kwargs["required"] = f.metadata.get("required", False)
        if f.metadata.get("check"):
            kwargs["type"] = checked(f.metadata["check"], convert)
        elif convert is not str:
            kwargs["type"] = convert
        old = f.metadata.get("deprecated_flags") or ()
        if old:
            help_text += f" (formerly {', '.join(old)}: still accepted, with a warning)"
        target.add_argument(flag, help=help_text, **kwargs)
        for old_flag in old:
            target.add_argument(old_flag, action=_DeprecatedFlag, replacement=flag, help=argparse.SUPPRESS, **kwargs)
