"""Command-line flags generated from the models they set, so a new policy knob is a flag at once.

Every field of ``MigrationPolicy`` becomes ``--field-name`` with the field's own description,
its default and its ``ZDM_`` variable in the help. A flag left out stays ``None`` in the
parsed arguments: only what was typed overrides the environment and the config file (a default
must not count as a choice, see ``Settings.policy``). Values are validated by the model itself
(``apply._policy`` names a bad one as typed), not by argparse.

Written against ``model_fields`` rather than pydantic-settings' ``CliSettingsSource``: that
source parses the whole settings object from the command line, while here the flags are one
layer of three (flags over environment over file) and their errors must name the flag.
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from typing import Any

import shtab
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from zdmproxy.policy import MigrationPolicy


class HelpFormatter(argparse.HelpFormatter):
    """``--help`` shows every default that is a value (``(default: 50)``), none that means unset."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        shown = default not in (None, False, argparse.SUPPRESS) and not isinstance(default, list)
        if shown and "%(default)" not in text and action.option_strings:
            text += " (default: %(default)s)"
        return text


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose help shows defaults; its sub-commands' parsers are Parsers too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def flag_name(field: str) -> str:
    """``queue_budget_ms`` -> ``--queue-budget-ms``: how a field is typed on the command line."""
    return "--" + field.replace("_", "-")


def add_model_flags(
    parser: argparse.ArgumentParser, model: type[BaseModel] = MigrationPolicy, *, title: str
) -> None:
    """One flag per field of ``model``, in a help group of its own."""
    group = parser.add_argument_group(title)
    for name, field in model.model_fields.items():
        kind = _scalar(field)
        help_text = f"{field.description or name.replace('_', ' ')} ({_default(field)}; ZDM_{name.upper()})"
        if kind is bool:
            # --allow-destructive / --no-allow-destructive: a default-on knob can be switched off too.
            group.add_argument(flag_name(name), action=argparse.BooleanOptionalAction, help=help_text)
        else:
            group.add_argument(flag_name(name), type=kind, metavar=_metavar(name), help=help_text)


def model_overrides(args: argparse.Namespace, model: type[BaseModel] = MigrationPolicy) -> dict[str, object]:
    """The fields of ``model`` given on the command line (absent flags are not choices)."""
    given = {name: getattr(args, name, None) for name in model.model_fields}
    return {name: value for name, value in given.items() if value is not None}


def _scalar(field: FieldInfo) -> type[Any]:
    """The field's type without ``| None``; only scalars make sense as one flag."""
    annotation = field.annotation
    if typing.get_origin(annotation) in (types.UnionType, typing.Union):
        (annotation,) = (arg for arg in typing.get_args(annotation) if arg is not type(None))
    if annotation not in (bool, int, float, str):
        raise TypeError(f"no flag for a field of type {annotation!r}: give it a scalar type")
    return typing.cast(type[Any], annotation)


def _default(field: FieldInfo) -> str:
    if field.default is None:
        return "default: off"
    if isinstance(field.default, bool):
        return f"default: {'on' if field.default else 'off'}"
    value = field.default
    shown = int(value) if isinstance(value, float) and value.is_integer() else value  # 100, not 100.0
    return f"default: {shown}"


def _metavar(name: str) -> str:
    for suffix, metavar in (("_ms", "MS"), ("_s", "S")):
        if name.endswith(suffix):
            return metavar
    return "N"


def print_completion(parser: argparse.ArgumentParser, shell: str) -> int:
    """The completion script for ``shell``, generated from the same parser (shtab), on stdout."""
    sys.stdout.write(shtab.complete(parser, shell=shell))
    return 0
