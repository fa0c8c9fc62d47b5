"""Build argparse options from a config dataclass: one flag per field, help from the field's
docstring, nested dataclasses flattened (so `TrainConfig.sae.k` is `--k`)."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import textwrap
import typing
from functools import cache

ALIASES = {"d_sae": "latents"}
SKIP = {"d_in"}


@cache
def field_docs(cls: type) -> dict[str, str]:
    """Docstrings written under each field of a dataclass."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for a, b in zip(body, body[1:], strict=False):
        if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant):
            docs[a.target.id] = " ".join(str(b.value.value).split()).replace("%", "%%")
    return docs


def _fields(cls: type, prefix: tuple[str, ...] = ()):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        t = hints[f.name]
        if dataclasses.is_dataclass(t):
            yield from _fields(t, (*prefix, f.name))
        elif f.name not in SKIP:
            yield (*prefix, f.name), f, t, field_docs(cls).get(f.name, "")


def add_dataclass_args(parser: argparse.ArgumentParser, cls: type) -> None:
    for path, f, t, doc in _fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        flag = "--" + ALIASES.get(path[-1], path[-1]).replace("_", "-")
        dest = "__".join(path)
        if f.metadata.get("positional"):
            parser.add_argument(dest, metavar=path[-1].upper(), nargs="?", default=default, help=doc)
        elif typing.get_origin(t) is list:  # --steer a=1 b=2, or --steer a=1 --steer b=2
            (item,) = typing.get_args(t)
            parser.add_argument(
                flag,
                dest=dest,
                type=item,
                nargs="+",
                action="extend",
                default=None,
                metavar=item.__name__.upper(),
                help=f"{doc} (default: {' '.join(map(str, default)) or 'none'})",
            )
        elif t is bool:
            parser.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=default, help=doc)
        else:
            kind = t if t in (int, float, str) else str
            metavar = {int: "N", float: "X", str: "STR"}[kind]
            parser.add_argument(
                flag, dest=dest, type=kind, default=default, metavar=metavar, help=f"{doc} (default: {default!r})"
            )


def _default(cls: type, path: tuple[str, ...]):
    for p in path[:-1]:
        cls = typing.get_type_hints(cls)[p]
    f = {f.name: f for f in dataclasses.fields(cls)}[path[-1]]
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def from_args(cls: type, ns: argparse.Namespace):
    """Instantiate `cls` (and its nested dataclasses) from parsed arguments."""
    kwargs: dict = {}
    for path, _f, t, _doc in _fields(cls):
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
