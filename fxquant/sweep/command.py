"""`fxquant sweep`: every (model, recipe, bits) cell is `fxquant quantize` run as a Ray task, on a
local Ray instance by default or on a cluster given its address; Ray schedules, fxquant does not.
Finished cells are kept on disk as they come in, so a restarted sweep only runs what is left."""
from __future__ import annotations

import argparse
import contextlib
import itertools
import logging
from dataclasses import asdict

import ray
from tqdm import tqdm

from fxquant import zoo
from fxquant.errors import FxQuantError
from fxquant.sweep.cell import Cell, add_shared_arguments, run_cell, shared_options
from fxquant.sweep.store import ResultStore, cell_key


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", nargs="+", default=[zoo.REFERENCE_NAME],
                   help="models, as `fxquant quantize --model` takes them (default: ref-vit)")
    p.add_argument("--recipes", nargs="+", required=True, help="recipe names, e.g. minmax repq-vit")
    p.add_argument("--bits", nargs="+", required=True, help="bit-widths, e.g. w8a8 w4a4")
    p.add_argument("--ray-address", default=None,
                   help="join this Ray cluster (e.g. auto, ray://head:10001); default: start a "
                        "local Ray instance on this machine")
    p.add_argument("--workers", type=int, default=None,
                   help="cells at once on the local Ray instance (default: one per core; ignored "
                        "with --ray-address, where the cluster's CPUs decide)")
    p.add_argument("--results", default="sweep-results",
                   help="folder of finished cells (<key>.json, <key>.onnx); a restarted sweep "
                        "reads it and runs only the cells not in it")
    add_shared_arguments(p)
    p.set_defaults(threads=1)  # each cell one CPU of Ray's, and the same numbers wherever it runs
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")


@contextlib.contextmanager
def ray_session(address: str | None, cpus: int | None):
    """Join the cluster at `address`, or start a quiet local instance with `cpus` CPUs; shut down
    after. Cells log nothing to this terminal: their errors come back as exceptions."""
    if address is None:
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.ERROR)
    else:
        try:
            ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
        except ConnectionError as e:
            raise FxQuantError(f"--ray-address {address}: cannot join the Ray cluster ({e})") from e
    try:
        yield
    finally:
        ray.shutdown()


def failure(error: ray.exceptions.RayError) -> str:
    """The cell's own exception when it raised one (an FxQuantError names the bad input), else
    Ray's reason (a worker that died, a node that left)."""
    cause = getattr(error, "cause", None) or error
    return f"{type(cause).__name__}: {cause}".splitlines()[0]


def run(args: argparse.Namespace) -> dict:
    if args.workers is not None and args.workers < 1:
        raise FxQuantError(f"--workers must be at least 1, got {args.workers}")
    if args.threads < 1:
        raise FxQuantError(f"--threads must be at least 1, got {args.threads}")
    cells = [Cell(*c) for c in itertools.product(args.models, args.recipes, args.bits)]
    shared = shared_options(args)
    store = ResultStore(args.results)
    keys = {cell: cell_key(cell, shared) for cell in cells}
    finished = {cell: result for cell in cells if (result := store.load(keys[cell])) is not None}
    errors = {}
    todo = [cell for cell in cells if cell not in finished]
    if todo:
        cpus = None if args.workers is None else args.workers * args.threads
        with ray_session(args.ray_address, cpus):
            task = ray.remote(run_cell).options(num_cpus=args.threads, max_retries=0)
            running = {task.remote(cell, shared, str(store.onnx_path(keys[cell]))): cell
                       for cell in todo}
            with tqdm(total=len(cells), initial=len(finished), desc="sweep", unit="cell") as bar:
                while running:
                    (done,), _ = ray.wait(list(running))
                    cell = running.pop(done)
                    try:
                        finished[cell] = store.save(keys[cell], ray.get(done))
                    except ray.exceptions.RayError as e:
                        errors[cell] = failure(e)
                    bar.update()
    return {"results": [finished[c] for c in cells if c in finished],
            "errors": [{**asdict(c), "error": errors[c]} for c in cells if c in errors]}


def _text(value) -> str:
    if value is None:
        return ""
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def markdown(result: dict) -> str:
    """One table: a row per cell, a column per key any result has (read generically, so new
    keys of `fxquant quantize --json` show up), and the error of a cell that failed."""
    rows = result["results"] + result["errors"]
    columns = list(dict.fromkeys(k for row in rows for k, v in row.items()
                                 if not isinstance(v, (list, dict))))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_text(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)
