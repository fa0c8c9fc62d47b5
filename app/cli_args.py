"""Build argparse options from a config dataclass: one flag per field, help from the field's
docstring (and its `help` metadata), nested dataclasses flattened (so `TrainConfig.sae.k` is `--k`).

A list option takes several values (`--steer a=1 b=2`), so it would also swallow a positional written
after it (`synthesize --steer laughter=1 "some text"`). A list field may declare the `form` of its
values (metadata, a predicate on the string); in a command with a positional, the last value of a list
option that does not have that form is given back to the positional when the positional is not given
otherwise (and the option keeps at least one value).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import textwrap
import typing
from functools import cache

from ttslens.sae.errors import BadInput

ALIASES = {"d_sae": "latents"}
SKIP = {"d_in"}
SPILLED = "_spilled"  # namespace attribute: [(action, index, value)] given back by list options


@cache
def field_docs(cls: type) -> dict[str, str]:
    """Docstrings written under each field of a dataclass (and of the dataclasses it extends)."""
    docs = {}
    for klass in reversed([k for k in cls.__mro__ if dataclasses.is_dataclass(k)]):
        tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        body = tree.body[0].body
        for a, b in zip(body, body[1:], strict=False):
            if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant):
                docs[a.target.id] = " ".join(str(b.value.value).split()).replace("%", "%%")
    return docs


def _field_default(f: dataclasses.Field):
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def _fields(cls: type, prefix: tuple[str, ...] = (), defaults=None):
    """(path, field, type, doc, default) of every leaf field; a nested dataclass's defaults are those of the
    instance its parent's default makes (a config may narrow a nested one's defaults)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        t = hints[f.name]
        if dataclasses.is_dataclass(t):
            inner = getattr(defaults, f.name) if defaults is not None else _field_default(f)
            yield from _fields(t, (*prefix, f.name), inner)
        elif f.name not in SKIP:
            default = getattr(defaults, f.name) if defaults is not None else _field_default(f)
            yield (*prefix, f.name), f, t, field_docs(cls).get(f.name, ""), default


class ListOption(argparse.Action):
    """`--opt A B C` (repeatable, values extend the list), converted here rather than by argparse so the
    last value can be given back to a positional when it lacks the field's `form`."""

    def __init__(self, *args, item: type = str, form=None, spill: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.item, self.form, self.spill = item, form, spill

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        values = list(values)
        current = list(getattr(namespace, self.dest) or [])
        if self.spill and self.form is not None and len(values) > 1 and not self.form(values[-1]):
            spilled = getattr(namespace, SPILLED, [])
            spilled.append((self, len(current) + len(values) - 1, values.pop()))
            setattr(namespace, SPILLED, spilled)
        converted = []
        for v in values:
            try:
                converted.append(self.item(v))
            except ValueError:
                raise argparse.ArgumentError(self, f"invalid {self.item.__name__} value: {v!r}") from None
        setattr(namespace, self.dest, current + converted)


def _number_form(item: type):
    def form(text: str) -> bool:
        try:
            item(text)
        except ValueError:
            return False
        return True

    return form


def add_dataclass_args(parser: argparse.ArgumentParser, cls: type) -> None:
    fields = list(_fields(cls))
    has_positional = any(f.metadata.get("positional") for _, f, _, _, _ in fields)
    for path, f, t, doc, default in fields:
        flag = "--" + (f.metadata.get("flag") or ALIASES.get(path[-1], path[-1])).replace("_", "-")
        dest = "__".join(path)
        if more := f.metadata.get("help", "").replace("%", "%%"):
            doc = f"{doc} {more[:1].upper()}{more[1:]}.".strip()
        if f.metadata.get("positional"):
            parser.add_argument(dest, metavar=path[-1].upper(), nargs="?", default=default, help=doc)
        elif typing.get_origin(t) is list:  # --steer a=1 b=2, or --steer a=1 --steer b=2
            (item,) = typing.get_args(t)
            form = f.metadata.get("form") or (_number_form(item) if item in (int, float) else None)
            parser.add_argument(
                flag,
                dest=dest,
                nargs="+",
                action=ListOption,
                item=item,
                form=form,
                spill=has_positional,
                default=None,
                metavar=item.__name__.upper(),
                help=f"{doc} (default: {' '.join(map(str, default)) or 'none'})",
            )
        elif t is bool:
            parser.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=default, help=doc)
        else:
            optional = type(None) in typing.get_args(t)  # `float | None`: unset means "the default elsewhere"
            if optional:
                t = next(a for a in typing.get_args(t) if a is not type(None))
            kind = t if t in (int, float, str) else str
            metavar = {int: "N", float: "X", str: "STR"}[kind]
            shown = "" if optional and default is None else f" (default: {default!r})"
            parser.add_argument(flag, dest=dest, type=kind, default=default, metavar=metavar, help=f"{doc}{shown}")


def _default(cls: type, path: tuple[str, ...]):
    return next(default for p, _f, _t, _doc, default in _fields(cls) if p == path)


def settle_spilled(cls: type, ns: argparse.Namespace) -> None:
    """Values list options gave back (see the module doc): the first fills an empty positional, any
    other goes back to its list (where it will be read, and refused, as one of its values)."""
    spilled = getattr(ns, SPILLED, [])
    if not spilled:
        return
    empty = [
        "__".join(path)
        for path, f, _t, _doc, _d in _fields(cls)
        if f.metadata.get("positional") and getattr(ns, "__".join(path)) in (None, "", _default(cls, path))
    ]
    if empty:
        setattr(ns, empty[0], spilled.pop(0)[2])
    for action, index, value in spilled:
        try:
            getattr(ns, action.dest).insert(index, action.item(value))
        except ValueError:
            flag = action.option_strings[0]
            raise BadInput(f"{flag} takes {action.metavar} values, not {value!r}: fix the value after {flag}") from None
    setattr(ns, SPILLED, [])


def from_args(cls: type, ns: argparse.Namespace):
    """Instantiate `cls` (and its nested dataclasses) from parsed arguments."""
    settle_spilled(cls, ns)
    kwargs: dict = {}
    for path, _f, t, _doc, _d in _fields(cls):
        d = kwargs
        for p in path[:-1]:
            d = d.setdefault(p, {})
        val = getattr(ns, "__".join(path))
        if typing.get_origin(t) is list:
            val = list(val) if val is not None else _default(cls, path)
        d[path[-1]] = val
    hints = typing.get_type_hints(cls)
    for name, val in list(kwargs.items()):
        if isinstance(val, dict) and dataclasses.is_dataclass(hints[name]):
            kwargs[name] = hints[name](**val)
    return cls(**kwargs)
