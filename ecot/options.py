"""Command-line flags generated from config dataclasses: one definition per option.

A config field declares its flag with :func:`option` (help text, choices, flag name, argparse
group in the field's metadata); :func:`add_options` turns the fields into argparse arguments and
:func:`build` makes the dataclass back from the parsed namespace. The flag's type comes from the
annotation:

* ``int`` / ``float`` / ``str`` (and ``X | None``, default ``None``) take one value;
* ``Literal[...]`` or ``choices=`` (pass the source-of-truth constant, e.g. ``RECIPES``) restrict it;
* ``bool`` is a switch: ``--x`` when the default is False, ``--no-x`` when it is True;
* a nested dataclass contributes its own fields, flags prefixed ``--<name>-`` (``prefix=`` changes it);
* a field without a default is a required flag (or a positional argument with ``positional=True``);
* anything else (dicts, tuples, ...) needs ``cli=False``: it keeps its default on the command line.

The namespace attribute of a flag is the flag's own name (``--no-progress`` -> ``args.no_progress``),
as hand-written argparse code would have it. Help text is plain text (``%`` needs no escaping).

Config modules may be heavy (``ecot.train.trainer`` imports torch) while ``ecot --help`` must stay
fast, so a subcommand adds its generated flags with :func:`add_later`: they are added when that
subcommand is parsed or its help is shown, not when ``ecot`` builds its parser.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import types
import typing
from typing import Any, Callable, Iterable, Literal

_KEY = "ecot.option"  # the key of our settings in a field's metadata


def option(default: Any = dataclasses.MISSING, help: str | None = None, *, flag: str | None = None,
           group: str | None = None, choices: Iterable | None = None, metavar: str | None = None,
           required: bool | None = None, positional: bool = False, prefix: str | None = None, cli: bool = True,
           default_factory: Any = dataclasses.MISSING, **field_kwargs) -> Any:
    """A dataclass ``field`` carrying its command-line form.

    ``flag``: the flag (default ``--field-name``, ``--no-field-name`` for a bool that defaults to True);
    ``group``: the argparse argument group's title; ``choices``: the allowed values; ``required``: a
    required flag even though the field has a default (the default stays for library callers);
    ``prefix``: for a nested dataclass, the prefix of its flags; ``cli=False``: no flag for this field.
    """
    settings = {"help": help, "flag": flag, "group": group, "choices": tuple(choices) if choices is not None else None,
                "metavar": metavar, "required": required, "positional": positional, "prefix": prefix, "cli": cli}
    metadata = {**field_kwargs.pop("metadata", {}), _KEY: settings}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata, **field_kwargs)


@dataclasses.dataclass
class _Spec:
    """One generated argument: where its value goes in the dataclass and how argparse reads it."""

    name: str  # the field's name
    flag: str  # "--max-steps", or the positional's dest
    dest: str
    group: str | None
    kwargs: dict
    invert: bool = False  # a --no-x switch for a field that defaults to True

    @property
    def positional(self) -> bool:
        return not self.flag.startswith("-")


def _settings(f: dataclasses.Field) -> dict:
    return f.metadata.get(_KEY, {})


def _has_default(f: dataclasses.Field) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else None


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """``X | None`` -> ``(X, True)``; anything else -> ``(tp, False)``."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _nested(f: dataclasses.Field, hints: dict) -> type | None:
    """The dataclass type of a nested-config field, else None."""
    tp, _ = _unwrap_optional(hints[f.name])
    return tp if dataclasses.is_dataclass(tp) and isinstance(tp, type) else None


def _specs(cls: type, prefix: str = "", group: str | None = None) -> Iterable[tuple[str, _Spec | list]]:
    """``(top-level field name, spec)`` for every argument of ``cls``, nested dataclasses flattened."""
    if not (dataclasses.is_dataclass(cls) and isinstance(cls, type)):
        raise TypeError(f"expected a dataclass type, got {cls!r}")
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        s = _settings(f)
        if not s.get("cli", True) or not f.init:
            continue
        sub = _nested(f, hints)
        if sub is not None:
            sub_prefix = s.get("prefix")
            sub_prefix = f"{f.name.replace('_', '-')}-" if sub_prefix is None else sub_prefix
            for _, spec in _specs(sub, prefix + sub_prefix, s.get("group") or group):
                yield f.name, spec
            continue
        yield f.name, _spec(cls, f, hints[f.name], prefix, s.get("group") or group)


def _spec(cls: type, f: dataclasses.Field, tp: Any, prefix: str, group: str | None) -> _Spec:
    s = _settings(f)
    where = f"{cls.__name__}.{f.name}"
    base, optional = _unwrap_optional(tp)
    default = _default(f)
    kwargs: dict[str, Any] = {}
    if s.get("help") is not None:
        kwargs["help"] = s["help"].replace("%", "%%")  # argparse formats help with %
    if s.get("metavar") is not None:
        kwargs["metavar"] = s["metavar"]
    if s.get("positional"):
        dest = f"{prefix}{f.name}".replace("-", "_")
        flag = dest
    else:
        name = f"{prefix}{f.name.replace('_', '-')}"
        flag = s.get("flag") or (f"--no-{name}" if base is bool and default is True else f"--{name}")
        dest = flag.lstrip("-").replace("-", "_")
    invert = False
    if base is bool and not optional:
        if not isinstance(default, bool):
            raise TypeError(f"{where}: a bool option needs a True or False default, got {default!r}")
        if s.get("positional") or s.get("choices"):
            raise TypeError(f"{where}: a bool option is a switch; it takes no positional/choices setting")
        kwargs.update(action="store_true", default=False)
        invert = default
    else:
        choices = s.get("choices")
        if typing.get_origin(base) is Literal:
            choices = choices or typing.get_args(base)
            base = type(choices[0])
        if base not in (int, float, str):
            raise TypeError(f"{where}: type {tp!r} has no command-line form; expected int, float, str, bool, "
                            "X | None, Literal[...] or a dataclass (or give the field option(cli=False))")
        if base is not str:
            kwargs["type"] = base
        if choices is not None:
            kwargs["choices"] = choices
        required = s.get("required")
        if required is None:
            required = not _has_default(f)
        if s.get("positional"):
            if not required:
                kwargs.update(nargs="?", default=default)
        elif required:
            kwargs["required"] = True
        else:
            kwargs["default"] = default
    return _Spec(f.name, flag, dest, group, kwargs, invert)


def group_of(parser: argparse.ArgumentParser, title: str | None):
    """The parser's argument group ``title`` (made on first use); the parser itself for ``None``."""
    if title is None:
        return parser
    for g in parser._action_groups:
        if g.title == title:
            return g
    return parser.add_argument_group(title)


def add_options(parser: argparse.ArgumentParser, cls: type, only: Iterable[str] | None = None,
                group: str | None = None, overrides: dict[str, dict] | None = None) -> None:
    """Add the flags of dataclass ``cls`` to ``parser``, skipping flags it already has.

    ``only``: just these top-level fields, in this order; ``group``: just the fields of this argparse
    group (both to lay flags out around hand-written ones; a later unfiltered call adds the rest);
    ``overrides``: per namespace attribute, argparse settings that differ on the command line (e.g.
    ``{"lr": {"default": None, "help": ...}}`` when the CLI resolves the default itself).
    """
    specs = list(_specs(cls))
    if only is not None:
        only = list(only)
        unknown = sorted(set(only) - {name for name, _ in specs})
        if unknown:
            raise ValueError(f"{cls.__name__} has no command-line fields {unknown}")
        specs = sorted((s for s in specs if s[0] in only), key=lambda s: only.index(s[0]))
    if group is not None:
        specs = [s for s in specs if s[1].group == group]
    overrides = dict(overrides or {})
    have = {a.dest for a in parser._actions}
    for _, spec in specs:
        if spec.dest in have:
            continue
        kwargs = {**spec.kwargs, **overrides.pop(spec.dest, {})}
        target = group_of(parser, spec.group)
        if spec.positional:
            target.add_argument(spec.dest, **kwargs)
        else:
            target.add_argument(spec.flag, dest=spec.dest, **kwargs)
    if overrides:
        raise ValueError(f"overrides for flags that this call does not add: {sorted(overrides)}")


def build(cls: type, args: argparse.Namespace, **values):
    """The ``cls`` instance the parsed ``args`` describe; ``values`` set fields directly (they win).

    A field whose flag ``args`` lacks keeps its default. Invalid values (the dataclass's own checks
    raise ``ValueError``) become a :class:`~ecot.errors.UsageError` that names the flags.
    """
    from ecot.errors import UsageError

    try:
        return _build(cls, args, "", values)
    except ValueError as err:  # the config's own checks (UsageError is a ValueError): an option is invalid
        raise UsageError(_name_flags(str(err), _flag_names(cls))) from None


def _build(cls: type, args: argparse.Namespace, prefix: str, values: dict):
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.name in values:
            kwargs[f.name] = values[f.name]
            continue
        s = _settings(f)
        if not s.get("cli", True):
            continue
        sub = _nested(f, hints)
        if sub is not None:
            sub_prefix = s.get("prefix")
            sub_prefix = f"{f.name.replace('_', '-')}-" if sub_prefix is None else sub_prefix
            kwargs[f.name] = _build(sub, args, prefix + sub_prefix, {})
            continue
        spec = _spec(cls, f, hints[f.name], prefix, None)
        if hasattr(args, spec.dest):
            value = getattr(args, spec.dest)
            kwargs[f.name] = (not value) if spec.invert else value
    return cls(**kwargs)


def _flag_names(cls: type) -> dict[str, str]:
    return {spec.name: spec.flag for _, spec in _specs(cls) if not spec.positional}


def _name_flags(message: str, names: dict[str, str]) -> str:
    """Say ``--max-steps`` where a config's message says ``max_steps``.

    Names with an underscore are unambiguous anywhere in the message; one-word names (``lr``,
    ``workers``) only where the message starts with them (``workers must be ...``)."""
    for name, flag in sorted(names.items(), key=lambda kv: -len(kv[0])):
        if "_" in name:
            message = re.sub(rf"(?<![\w-]){re.escape(name)}(?![\w-])", flag, message)
        elif re.match(rf"{re.escape(name)}\b(?!-)", message):
            message = flag + message[len(name):]
    return message


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that can add (generated) arguments on first use; see :func:`add_later`."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._pending: list[Callable[[argparse.ArgumentParser], None]] = []

    def _complete(self) -> None:
        while self._pending:
            self._pending.pop(0)(self)

    def parse_known_args(self, args=None, namespace=None):
        self._complete()
        return super().parse_known_args(args, namespace)

    def format_usage(self) -> str:
        self._complete()
        return super().format_usage()

    def format_help(self) -> str:
        self._complete()
        return super().format_help()


def add_later(parser: argparse.ArgumentParser, add: Callable[[argparse.ArgumentParser], None]) -> None:
    """Call ``add(parser)`` when ``parser`` is first used (a :class:`Parser`), or now (any other parser)."""
    if isinstance(parser, Parser):
        parser._pending.append(add)
    else:
        add(parser)


class DefaultsHelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Appends `` (default X)`` to the help of an option that has a default (not None, not a switch)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        no_default = action.default is None or action.default is False or action.default is argparse.SUPPRESS
        if "%(default)" in text or no_default or action.required or not action.option_strings or not text:
            return text
        return f"{text} (default %(default)s)"
