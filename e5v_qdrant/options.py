"""How an option is declared: one dataclass field carrying its help text, choices, checks and what it affects.

Every config dataclass (the ``config`` package) is an ``Options``: its fields are declared with :func:`option`, allowed values
(``choices``) are validated from that declaration for the Python API and the command line alike, and
:meth:`Options.from_options` builds it from loose options (an adapter's fields, a collection's stamp, keyword
arguments) with one policy for unknown keys: they raise, naming the valid ones. ``cli.arguments`` turns the same
declarations into argparse options; ``from_namespace`` builds the dataclass back from parsed arguments.

Example:
    >>> from e5v_qdrant.config import EncoderConfig
    >>> EncoderConfig.from_options({"prompts": "e5v-typofix"}).prompts
    'e5v-typofix'
    >>> EncoderConfig.from_options({"prompt": "e5v"})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    e5v_qdrant.errors.E5VConfigError: 'prompt' is not an option of EncoderConfig; valid options: adapter, ...
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import field
from typing import Any, TypeVar

from .errors import E5VConfigError

__all__ = ["option", "Options", "from_namespace", "namespace_options", "flag_of"]

T = TypeVar("T", bound="Options")


def option(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    flag: str | None = None,
    choices=None,
    cli: bool = True,
    vectors: bool = False,
    query_time: bool = False,
    cli_default: Any = dataclasses.MISSING,
    scope: str | None = None,
    check: Callable[[Any], None] | None = None,
    deprecated_flags: tuple[str, ...] = (),
    required: bool = False,
    metavar: str | None = None,
    repeatable: bool = False,
    **kw,
):
    """A dataclass field carrying its CLI help text and facts about it.

    Args:
        help: the ``--help`` text.
        flag: the CLI flag (default ``--field-name``).
        choices: allowed values; checked for the Python API (``Options.__post_init__``) and the command line alike.
        cli: whether the CLI offers it at all.
        scope: what the option is for, so each command offers only its own (``add_arguments(..., scopes=...)``);
            ``None`` = every command that takes this dataclass. ``StoreConfig`` uses ``CREATE`` (options used only when
            a collection is created: recorded in it) and ``WRITE`` (write-only: how points are written) and ``SEARCH``.
        check: validates a typed value (raises ``E5VConfigError``) while the command line is parsed, so a bad
            value is a usage error before anything else happens (``__post_init__`` still checks it for the API).
        deprecated_flags: old flags still accepted for this option, each with a warning naming ``flag``.
        required: the command line must give it; ``metavar``: its value's name in ``--help``.
        repeatable: (a list) the flag is given once per value (``--where a=1 --where b=2``) instead of once for all.
        vectors: whether the option changes the vectors an encoder makes, so it is recorded in the collection. The
            model fingerprint, the collection stamp, the adapters' fields, the options ``reingest`` takes and every
            compatibility check derive from this declaration (``e5v_qdrant.identity``), so an option that changes
            vectors can never be left out of one of them.
        query_time: (with ``vectors``) the option shapes query vectors only, never stored points: recorded, but a
            difference is not a mismatch (``identity.QUERY_TIME_FIELDS``).
        cli_default: a different default for the command line than for the Python API (e.g. process-wide tuning
            that a CLI process may turn on but a library must not impose on its host).
    """
    meta = {
        "help": help,
        "flag": flag,
        "choices": tuple(choices) if choices else None,
        "cli": cli,
        "vectors": vectors,
        "query_time": query_time,
        "cli_default": cli_default,
        "scope": scope,
        "check": check,
        "deprecated_flags": deprecated_flags,
        "required": required,
        "metavar": metavar,
        "repeatable": repeatable,
    }
    if "default_factory" in kw:
        return field(metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


def flag_of(f: dataclasses.Field) -> str:
    """The command-line flag of a field (its declared ``flag``, else ``--field-name``)."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def at_least_1(value: Any) -> None:
    """``check`` of a count that must be at least 1 (``None``: a default decides)."""
    if value is not None and value < 1:
        raise E5VConfigError(f"must be >= 1, got {value}")


class Options:
    """Base of the config dataclasses: declared choices and checks are validated, then the class's own
    ``validate()`` runs."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            choices, check = f.metadata.get("choices"), f.metadata.get("check")
            value = getattr(self, f.name)
            if choices and value is not None and value not in choices:
                raise E5VConfigError(f"{f.name} {value!r} is not one of {', '.join(map(str, choices))} ({flag_of(f)})")
            if check is not None and value is not None:
                try:
                    check(value)
                except E5VConfigError as exc:
                    raise E5VConfigError(f"{f.name} ({flag_of(f)}): {exc}") from None
        self.validate()

    def validate(self) -> None:
        """Checks beyond the declared choices (ranges, combinations); raises ``E5VConfigError``."""

    @classmethod
    def from_options(cls: type[T], options: Mapping[str, Any] | None = None, /, **more: Any) -> T:
        """The validated config from loose options (``options`` and ``more``; ``more`` wins).

        The one policy for unknown keys, whoever builds a config (adapters, a collection's stamp, keyword
        arguments): they raise, naming the valid options, instead of being dropped (a dropped option would silently
        give other vectors than asked for).

        Raises:
            E5VConfigError: an option ``cls`` does not have (the message lists the valid ones), or an invalid value.
        """
        values = {**(options or {}), **more}
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise E5VConfigError(
                f"{', '.join(map(repr, unknown))} {'is not an option' if len(unknown) == 1 else 'are not options'} "
                f"of {cls.__name__}; valid options: {', '.join(sorted(known))}"
            )
        return cls(**values)


def namespace_options(cls: type, ns: argparse.Namespace) -> dict[str, Any]:
    """The options of dataclass ``cls`` in parsed arguments: what the user typed, plus each field's ``cli_default``
    where it declares one and the user typed nothing (other fields are left to the dataclass default)."""
    fields = dataclasses.fields(cls)
    names = {f.name for f in fields}
    values = {
        f.name: f.metadata["cli_default"]
        for f in fields
        if f.metadata.get("cli_default", dataclasses.MISSING) is not dataclasses.MISSING
    }
    values.update((k, v) for k, v in vars(ns).items() if k in names)
    return values


def from_namespace(cls: type[T], ns: argparse.Namespace, **extra: Any) -> T:
    """Build ``cls`` from the parsed options that belong to it (``namespace_options``; others are ignored), plus
    ``extra``."""
    return cls.from_options(namespace_options(cls, ns), **extra)
