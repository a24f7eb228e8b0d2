"""QuantizedModel -> integer ONNX file that onnxruntime loads, written all-or-nothing.

Before a file is moved into place it is checked twice: no integer GEMM may saturate on a CPU
without VNNI when its target is `portable` (`lowering/saturation.py`, independent of this CPU),
and onnxruntime on this CPU must reproduce the PyTorch numerics on the example within the
recipe's tolerance (`QuantConfig.export_tolerance`). The target is recorded in the file's metadata.
"""
from __future__ import annotations

import gc
import os
import shutil
import tempfile
from pathlib import Path
from typing import Mapping

import onnx
import onnx_ir as ir
import torch
from tqdm import tqdm

from fxquant import cpu, target
from fxquant.calibrate import graph_inputs, run_batch
from fxquant.data import ModelInputs, TransformFn, as_model_inputs, model_inputs, output_tensors
from fxquant.errors import ExportMismatch, FxQuantError
from fxquant.lowering import saturation
from fxquant.lowering.ort_rules import optimize_for_onnxruntime
from fxquant.lowering.runtime import TARGET_KEY, OnnxModule
from fxquant.padding import kept_tokens
from fxquant.quantized_model import QuantizedModel
from fxquant.quantizers import ONNX_TRANSLATIONS

OPSET = 21  # int4 initializers and block-wise DequantizeLinear
EXTERNAL_DATA_BYTES = 2 ** 31 - 2 ** 27  # protobuf's 2 GiB limit on one file, less room for the graph


def example_inputs(example) -> tuple[tuple, dict]:
    """(args, kwargs) of an example: a tensor, a tuple of positional inputs or a dict."""
    inputs = as_model_inputs(example, "example_input")
    return tuple(inputs.args), dict(inputs.kwargs)


BATCH_AXIS = {0: "batch"}
TOKEN_AXES = {0: "batch", 1: "sequence"}


def default_axes(example: ModelInputs) -> Mapping[int, str]:
    """The batch axis free, and the sequence axis too when every input is token ids or masks
    (integer tensors of rank 2 and more), so a text encoder's file runs at any length."""
    tensors = example.tensors()
    tokens = tensors and all(not t.is_floating_point() and t.ndim >= 2 for t in tensors)
    return TOKEN_AXES if tokens else BATCH_AXIS


def _batch_of_two(example: ModelInputs) -> ModelInputs:
    """The example with one-sample inputs repeated to two: torch.export fixes an axis of size 1."""
    return example.map_tensors(lambda t: torch.cat([t, t]) if t.ndim > 0 and t.shape[0] == 1 else t)


def dynamic_batch(args: tuple, kwargs: dict, axes: Mapping[int, str] = BATCH_AXIS):
    """The same named dynamic axes on every input ({0: "batch", 1: "sequence"} for token ids and
    their masks); torch.export refuses an axis whose size the traced graph fixed."""
    dims = {name: torch.export.Dim(name) for name in set(axes.values())}
    spec = {axis: dims[name] for axis, name in axes.items()}
    return {k: dict(spec) for k in kwargs} if kwargs else tuple(dict(spec) for _ in args)


def _umask() -> int:
    """The process's umask (reading it means setting it: put it straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_destination(path: str | Path) -> Path:
    """`path` as a file export_onnx can write (the CLI checks it before calibrating)."""
    path = Path(path)
    if path.is_dir():
        raise FxQuantError(f"cannot write {path}: it is a directory, give a file name")
    if not path.parent.is_dir():
        raise FxQuantError(f"cannot write {path}: directory {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK):
        raise FxQuantError(f"cannot write {path}: directory {path.parent} is not writable")
    return path


def _unwrap_fxquant_error(error: BaseException) -> FxQuantError | None:
    while error is not None:
        if isinstance(error, FxQuantError):
            return error
        error = error.__cause__ or error.__context__
    return None


def to_onnx_ir(qmodel: torch.nn.Module, example_input,
               dynamic_axes: Mapping[int, str] = BATCH_AXIS) -> ir.Model:
    """Export through torch.onnx (dynamo) with fxquant's translations, then ORT clean-up."""
    args, kwargs = example_inputs(example_input)
    try:
        program = torch.onnx.export(
            qmodel, args, kwargs=kwargs or None, dynamo=True, opset_version=OPSET,
            custom_translation_table=ONNX_TRANSLATIONS,
            dynamic_shapes=dynamic_batch(args, kwargs, dynamic_axes), verbose=False)
    except Exception as e:
        cause = _unwrap_fxquant_error(e)
        if cause is not None:
            raise FxQuantError(f"cannot lower to ONNX: {cause}") from e
        raise
    model = optimize_for_onnxruntime(program.model)
    for node in model.graph.all_nodes():
        node.metadata_props.clear()  # exporter debug info (stack traces): a fifth of a 4-bit file
    return model


def output_names(output) -> list[str] | None:
    """The model's own names for its output tensors, in the exporter's order: a dict's (a Hugging
    Face ModelOutput's) keys, output_<i> in a tuple, "output" for one tensor; None when nested."""
    if isinstance(output, torch.Tensor):
        return ["output"]
    if isinstance(output, dict) and all(isinstance(v, torch.Tensor) for v in output.values()):
        return [str(k) for k in output]
    if isinstance(output, (tuple, list)) and all(isinstance(v, torch.Tensor) for v in output):
        return [f"output_{i}" for i in range(len(output))]
    return None


def _name_outputs(model: ir.Model, reference) -> None:
    """Rename the graph outputs after the model's outputs (the exporter writes e.g. `linear_48`)."""
    names = output_names(reference)
    taken = {v.name for node in model.graph.all_nodes() for v in (*node.inputs, *node.outputs) if v}
    taken |= {v.name for v in model.graph.inputs}
    outputs = list(model.graph.outputs)
    if names is None or len(names) != len(outputs) or len(set(names)) != len(names):
        return
    if taken & (set(names) - {v.name for v in outputs}):
        return   # a name already used inside the graph
    for value, name in zip(outputs, names):
        value.name = name


def relative_error(reference, other) -> float:
    """||other - reference|| / ||reference|| over the output tensors both hold, in order
    (OnnxModule returns the file's first output)."""
    pairs = list(zip(output_tensors(reference), output_tensors(other)))
    diff = sum(float((o.float() - r.float()).pow(2).sum()) for r, o in pairs)
    norm = sum(float(r.float().pow(2).sum()) for r, _ in pairs)
    return (diff / max(norm, 1e-30)) ** 0.5


def _check_target(model: ir.Model, config) -> None:
    if config.target != target.PORTABLE:
        return
    risky = saturation.saturating(model)
    if risky:
        worst = max(risky, key=lambda c: max(abs(v) for v in c.pair_range))
        raise FxQuantError(f"{len(risky)} integer GEMMs could saturate on CPUs without VNNI "
                           f"(worst: {worst.node}, pair sums {worst.pair_range}) although the "
                           f"target is {target.PORTABLE!r}: this is a bug in fxquant, please report it")


def sample_errors(reference, other) -> torch.Tensor:
    """The relative error of each sample (index on the first axis) over the output tensors with
    the first one's batch axis."""
    pairs = [(r.float(), o.float()) for r, o in zip(output_tensors(reference), output_tensors(other))]
    pairs = [(r, o) for r, o in pairs if r.dim() and len(r) == len(pairs[0][0])]
    diff = sum((o - r).pow(2).flatten(1).sum(1) for r, o in pairs)
    norm = sum(r.pow(2).flatten(1).sum(1) for r, _ in pairs)
    return (diff / norm.clamp_min(1e-30)).sqrt()


def _real_tokens(outputs, keep: torch.Tensor | None) -> list[torch.Tensor]:
    """The output tensors with the padding positions `keep` (samples, tokens) marks False set to
    0, in tensors whose first two axes are (samples, tokens); the rest as they are."""
    tensors = output_tensors(outputs)
    if keep is None:
        return tensors
    return [t * keep.reshape(*keep.shape, *[1] * (t.ndim - 2)).to(t.dtype)
            if t.ndim >= 2 and t.shape[:2] == keep.shape else t for t in tensors]


def _padding_kept(qmodel: QuantizedModel, example: ModelInputs) -> torch.Tensor | None:
    """(samples, tokens), True at the example's real tokens, when the graph has a padding mask."""
    return kept_tokens(qmodel, graph_inputs(qmodel, [example]))


def _check_numerics(onnx_module: OnnxModule, example_input, reference, tolerance: float,
                    keep: torch.Tensor | None = None) -> None:
    """Refuse a file whose outputs on the example are off by more than `tolerance`; say how many
    samples are: a wrong graph puts every sample off, while a few samples far off and the rest
    exact is how a low-bit model amplifies a code that onnxruntime's float kernels round the other
    way at a tie. Padding tokens (`keep` False, from the graph's own attention mask) are left out:
    no real token reads them, and the same tie at every padding position of a sample would
    otherwise count as that sample being off."""
    args, kwargs = example_inputs(example_input)
    reference = _real_tokens(reference, keep)
    produced = _real_tokens(onnx_module(*args, **kwargs), keep)
    error = relative_error(reference, produced)
    if not error <= tolerance:
        per_sample = sample_errors(reference, produced)
        off = per_sample > tolerance
        rest = (f"; the other {int((~off).sum())} agree to {per_sample[~off].max().item():.1e}"
                if not off.all() else "")
        raise ExportMismatch(
            f"the ONNX file disagrees with fxquant's PyTorch numerics on the example: relative "
            f"error {error:.4f} > tolerance {tolerance} on this CPU ({cpu.current().describe()}); "
            f"{int(off.sum())} of {len(off)} samples are off (worst {per_sample.max().item():.3f})"
            f"{rest}; pass verify=False to write it anyway", error)


def save(model: ir.Model, file: Path) -> list[Path]:
    """Write `model` at `file`, its initializers in `<file>.data` beside it when they would not fit
    in one protobuf file (onnxruntime and onnx.checker read them from there, given the path).
    Returns the files written, the model last."""
    size = sum(v.const_value.nbytes for v in model.graph.initializers.values()
               if v.const_value is not None)
    if size <= EXTERNAL_DATA_BYTES:
        ir.save(model, file)
        return [file]
    data = file.with_name(f"{file.name}.data")
    ir.save(model, file, external_data=data.name)
    return [data, file]


def export_onnx(qmodel, path: str | Path, example_input,
                dynamic_axes: Mapping[int, str] | None = None, verify: bool = True,
                transform_fn: TransformFn | None = None) -> Path:
    """Write `qmodel` as integer ONNX at `path`; on any failure nothing is left there.
    `dynamic_axes` (axis -> name, on every input) are left free in the file: by default the batch
    axis, and the sequence axis of token inputs (`default_axes`), whatever the example's sizes.
    With `verify` the
    file must be exact on its target CPUs and agree with the PyTorch numerics on the example.
    `example_input` is the model's inputs (a tensor, a tuple of positional inputs, a dict), or a
    loader item mapped to them by `transform_fn` as in `convert`. The file gets the permissions
    of any new file (the user's umask). A model whose initializers pass protobuf's 2 GiB limit
    keeps them in `<path>.data` beside the file."""
    if not isinstance(qmodel, QuantizedModel):
        raise FxQuantError(f"export_onnx needs a calibrated QuantizedModel from fxquant.convert, "
                           f"got {type(qmodel).__name__}")
    path = check_destination(path)
    example = (model_inputs(example_input, transform_fn) if transform_fn is not None
               else as_model_inputs(example_input, "example_input"))
    progress = tqdm(total=4, desc=f"exporting {path.name}", leave=False)
    with torch.no_grad():
        reference = run_batch(qmodel, example, 0, what="export example")
    axes = default_axes(example) if dynamic_axes is None else dynamic_axes
    model = to_onnx_ir(qmodel, _batch_of_two(example), axes)
    _name_outputs(model, reference)
    model.metadata_props[TARGET_KEY] = qmodel.config.target
    progress.update()
    if verify:
        _check_target(model, qmodel.config)
    tmp = Path(tempfile.mkdtemp(suffix=".onnx.tmp", dir=path.parent))  # the file and its data
    try:
        files = save(model, tmp / path.name)
        del model  # the checks read the file: the session must not sit beside a second copy
        gc.collect()  # (the IR's nodes and graphs refer to each other)
        onnx.checker.check_model(files[-1], full_check=True)
        progress.update()
        onnx_module = OnnxModule(files[-1], warn=False)  # the file loads in onnxruntime
        if verify:
            _check_numerics(onnx_module, example, reference, qmodel.config.export_tolerance,
                            _padding_kept(qmodel, example))
        progress.update()
        for file in files:  # the data before the model that names it
            os.chmod(file, 0o666 & ~_umask())   # like any new file, not mkdtemp's private one
            os.replace(file, path.parent / file.name)
        progress.update()
    finally:
        progress.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return path
