"""One cell of a sweep, (model, recipe, bits), run exactly as `fxquant quantize` runs it: the
same parser builds its arguments and the same function runs it, so a sweep's numbers for a cell
are the ones `fxquant quantize` prints for it."""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Callable

from fxquant import quantize_command, workload


@dataclass(frozen=True)
class Cell:
    model: str
    recipe: str
    bits: str

    def argv(self, out: str) -> list[str]:
        """The `fxquant quantize` options that name this cell and where its ONNX file goes."""
        return ["--model", self.model, "--recipe", self.recipe, "--bits", self.bits, "--out", out]


def add_shared_arguments(p: argparse.ArgumentParser) -> None:
    """The `fxquant quantize` options a sweep passes unchanged to every cell."""
    workload.add_data_arguments(p)
    quantize_command.add_cell_options(p)


def _parser(add_arguments: Callable[[argparse.ArgumentParser], None]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser


SHARED = tuple(sorted(vars(_parser(add_shared_arguments).parse_args([]))))


def shared_options(args: argparse.Namespace) -> dict:
    """The values of the shared options, by name, as the sweep's command line set them."""
    return {name: getattr(args, name) for name in SHARED}


def quantize_args(cell: Cell, shared: dict, out: str) -> argparse.Namespace:
    """`fxquant quantize`'s own parser, with the shared values as its defaults, parses the cell."""
    parser = _parser(quantize_command.add_arguments)
    parser.set_defaults(**shared)
    return parser.parse_args(cell.argv(out))


def run_cell(cell: Cell, shared: dict, out: str) -> dict:
    """A sweep task: `fxquant quantize` for one cell; its result dict, or its exception."""
    return quantize_command.run(quantize_args(cell, shared, out))
