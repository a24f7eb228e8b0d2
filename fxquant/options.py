"""Typed `QuantConfig.options`: each pass that reads options declares a frozen dataclass of them,
every field an option key with its default and the rule its value must follow, so a misspelled
key or a wrong value fails in one line before calibration (pipeline.check)."""
from __future__ import annotations

import argparse
import ast
import difflib
import math
from dataclasses import dataclass, field, fields
from typing import Callable, Collection, Iterable, Mapping

from fxquant.errors import FxQuantError


@dataclass(frozen=True)
class Rule:
    """What an option's value must be: `accepts` decides, `allowed` says it in the error."""
    allowed: str
    accepts: Callable[[object], bool]


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


BOOL = Rule("True or False", lambda v: isinstance(v, bool))
INT = Rule("an int", _is_int)
COUNT = Rule("an int >= 0", lambda v: _is_int(v) and v >= 0)
POSITIVE_INT = Rule("an int >= 1", lambda v: _is_int(v) and v >= 1)
NON_NEGATIVE = Rule("a number >= 0", lambda v: _is_number(v) and v >= 0)
POSITIVE = Rule("a number > 0", lambda v: _is_number(v) and v > 0)
PROBABILITY = Rule("a number in [0, 1]", lambda v: _is_number(v) and 0 <= v <= 1)


def one_of(choices: Collection[str]) -> Rule:
    """A name from `choices` (read when checked, so later entries count)."""
    return Rule(f"one of {', '.join(repr(c) for c in choices)}",
                lambda v: isinstance(v, str) and v in choices)


def optional(rule: Rule) -> Rule:
    return Rule(f"None or {rule.allowed}", lambda v: v is None or rule.accepts(v))


def option(default, rule: Rule):
    """A field of an Options class: the key's default and the rule its value must follow."""
    return field(default=default, metadata={"rule": rule})


def unknown_option(key, known: Iterable[str]) -> FxQuantError:
    """The error for an option key nothing reads, naming the closest known key."""
    known = sorted(known)
    close = difflib.get_close_matches(str(key), known, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"known options are {', '.join(known)}"
    return FxQuantError(f"unknown option {key!r}: {hint}")


@dataclass(frozen=True)
class Options:
    """The typed `QuantConfig.options` one pass reads. Each field is an option key, declared with
    `option(default, rule)`; values are checked when the object is made. Keys starting with PREFIX
    belong to the class, so an unknown one is a misspelling of one of its keys."""
    PREFIX = ""

    def __post_init__(self):
        for f in fields(self):
            value, rule = getattr(self, f.name), f.metadata["rule"]
            if not rule.accepts(value):
                raise FxQuantError(f"option {f.name}={value!r} is not allowed: it must be {rule.allowed}")

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_options(cls, options: Mapping[str, object]):
        """The class's keys of `options` over its defaults; an unknown key with PREFIX is refused."""
        mine = {k: v for k, v in options.items() if isinstance(k, str) and k.startswith(cls.PREFIX)}
        for key in mine:
            if key not in cls.keys():
                raise unknown_option(key, cls.keys())
        return cls(**mine)


def parse_assignment(text: str) -> tuple[str, object]:
    """`KEY=VALUE` as written on the command line: the value read as a Python literal (2000, 0.5,
    None, True), anything else as the text itself (median). The key and value are checked later,
    against the passes' Options, like any `QuantConfig.options`."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE, e.g. recon_iters=2000")
    try:
        return key.strip(), ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
        return key.strip(), value.strip()


def add_argument(parser: argparse.ArgumentParser) -> None:
    """`--option KEY=VALUE ...` for every command that quantizes: pass options over the recipe's."""
    parser.add_argument("--option", nargs="+", action="extend", type=parse_assignment, default=[],
                        metavar="KEY=VALUE",
                        help="pass options over the recipe's, e.g. recon_iters=2000 "
                             "recon_max_seconds=None (an unknown key is refused, naming the "
                             "closest known one)")
