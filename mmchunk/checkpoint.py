"""Loading training checkpoints safely: tensors and plain containers only, never pickled objects."""

from __future__ import annotations

import hashlib
import inspect
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch

from mmchunk.model import ChunkFusionModel


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_checkpoint(path: str | Path) -> dict:
    """The contents of a checkpoint file of `mmchunk fit`, read with `weights_only=True`: tensors
    and plain containers only, never pickled objects. Every way it can fail is one sentence naming
    the file: a folder, no such file, an empty or truncated file, not a PyTorch file, pickled
    objects, or a file another program made (a key missing)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder, not a checkpoint file")
    if not path.is_file():
        raise FileNotFoundError(f"no such checkpoint: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: the file is empty")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" in str(exc):
            raise ValueError(
                f"{path}: holds pickled Python objects, which mmchunk never loads (only tensors and values)"
            ) from None
        raise ValueError(f"{path}: not a PyTorch checkpoint") from None
    except Exception as exc:  # torch's loaders raise many types for bytes that are not theirs
        if isinstance(exc, EOFError) or "zip archive" in str(exc) or "central directory" in str(exc):
            raise ValueError(f"{path}: the file is truncated or damaged") from None
        raise ValueError(f"{path}: not a PyTorch checkpoint") from None
    missing = [k for k in ("state_dict", "hyper_parameters") if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise ValueError(f"{path}: not a checkpoint of `mmchunk fit` (no {' or '.join(map(repr, missing))})")
    return ckpt


def load_module(path: str | Path, device: str | torch.device = "cpu"):
    """The `AudioTextModule` of a checkpoint of `mmchunk fit` (`read_checkpoint`); weights that do
    not fit the model the checkpoint describes are a one-line ValueError naming the file."""
    from mmchunk.training import AudioTextModule

    ckpt = read_checkpoint(path)
    accepted = inspect.signature(AudioTextModule.__init__).parameters
    hparams = {k: v for k, v in legacy_hparams(ckpt["hyper_parameters"]).items() if k in accepted}
    try:
        module = AudioTextModule(**hparams)
        module.load_state_dict(current_tensors(ckpt["state_dict"], module))
    except (RuntimeError, TypeError, ValueError, KeyError) as exc:
        reason = " ".join(str(exc).split())[:160]
        raise ValueError(f"{path}: its weights do not fit the model it describes ({reason})") from None
    return module.to(device)


def init_from_checkpoint(module: torch.nn.Module, path: str | Path) -> tuple[int, list[str], list[str]]:
    """Copy into `module` every tensor of a checkpoint of `mmchunk fit` (`read_checkpoint`) whose
    name it has (fine-tuning, or a recipe that adds a stage to a trained model). Returns (tensors
    copied, the module's names the checkpoint lacks, the checkpoint's names the module lacks). A
    tensor whose shape differs is a one-line ValueError naming the file and the tensor."""
    target = module.state_dict()
    source = current_tensors(read_checkpoint(path)["state_dict"], module)
    for name, value in source.items():
        if name in target and target[name].shape != value.shape:
            raise ValueError(
                f"{path}: {name} is {tuple(value.shape)} there and {tuple(target[name].shape)} in this "
                "model (init_from copies weights between models of the same widths)"
            )
    shared = {name: value for name, value in source.items() if name in target}
    module.load_state_dict(shared, strict=False)
    return len(shared), sorted(set(target) - set(source)), sorted(set(source) - set(target))


LEGACY_KEYS = (
    "ratio_weight",
    "predict_weight",
    "match_weight",
    "main_depth",
    "ctc_weight",
    "routing_windows",
)
"""Arguments that only checkpoints written before the objectives became parts have."""

LEGACY_TENSORS = {
    "model.predictors.": "objectives.predict.heads.",
    "model.word_head.": "objectives.words.head.",
    "model.match_head.": "objectives.match.head.",
}
"""Where the tensors of the heads that moved into their objectives were named before."""


def legacy_hparams(h: Mapping) -> dict:
    """`AudioTextModule` arguments from those of a checkpoint written with flat loss weights (one
    keyword per weight and per backbone option); other arguments are returned as they are."""
    if not any(k in h for k in LEGACY_KEYS):
        return dict(h)
    kept = ("dim", "embed_dim", "chunk_rate_hz", "encoders", "heads", "fusion_depth", "segmentation",
            "video_clips", "lr", "weight_decay", "warmup_steps", "max_steps", "init_from")  # fmt: skip
    out = {k: h[k] for k in kept if k in h}
    moe = dict(h.get("moe") or {})
    moe_weight = moe.pop("weight", 0.01)
    if h.get("backbone", "chunk") == "hrm":
        out["backbone"] = {"kind": "hrm", **(h.get("hrm") or {})}
    else:
        out["backbone"] = {
            "depth": h.get("main_depth", 2), "outer_depth": h.get("outer_depth", 1),
            "outer_mixer": h.get("outer_mixer", "recurrent"), "stages": h.get("stages", 1),
            "moe": moe or None, "tied_routing": h.get("onset_weight", 0.0) == 0,
        }  # fmt: skip
    out["routing"] = {
        "windows": h.get("routing_windows") or {},
        "center": list(h.get("routing_center") or []),
        "gain": list(h.get("routing_gain") or []),
    }
    if h.get("ctc_weight", 0.0) > 0:
        out["aligner"] = {
            "probe": h.get("ctc_probe", False),
            "mixer": h.get("ctc_probe_mixer", "window"),
            "clips": h.get("ctc_clips"),
        }
    out["probe_decay"] = h.get("ctc_probe_decay", True)
    weights = {
        "contrastive": {},
        "ratio": {"weight": h.get("ratio_weight", 0.03), "per_sequence": h.get("ratio_per_sequence", True),
                  "inner_ratio": h.get("inner_ratio", 3.0)},
        "predict": {"weight": h.get("predict_weight", 0.1)},
        "match": {"weight": h.get("match_weight", 0.5)},
        "moe": {"weight": moe_weight if moe else 0.0},
        "ctc": {"weight": h.get("ctc_weight", 0.0)},
        "pause": {"weight": h.get("pause_weight", 0.0)},
        "anchor": {"weight": h.get("anchor_weight", 0.0), "ramp": h.get("anchor_ramp")},
        "onset": {"weight": h.get("onset_weight", 0.0), "pos_weight": h.get("onset_pos_weight", 1.0)},
        "words": {"weight": h.get("word_weight", 0.0), "buckets": h.get("word_buckets", 4096)},
    }  # fmt: skip
    out["objectives"] = {k: v for k, v in weights.items() if v.get("weight", 1.0) > 0}
    return out


def current_tensors(state: Mapping[str, torch.Tensor], module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A checkpoint's tensors under today's names (`LEGACY_TENSORS`); a moved head whose objective
    `module` does not train (the flat model built the matching head even at weight 0) is left out."""
    names = set(module.state_dict())
    renamed = {}
    for name, value in state.items():
        for old, new in LEGACY_TENSORS.items():
            if name.startswith(old):
                name = new + name[len(old) :]
                if name not in names:
                    name = None
                break
        if name is not None:
            renamed[name] = value
    return renamed


def load_model(path: str | Path | None, device: str | torch.device = "cpu") -> tuple[ChunkFusionModel, str]:
    """The eval-mode model of a checkpoint (see `load_module`), or with `path` None an untrained
    default model (seed 0, identity routing); and a label saying which."""
    if path is None:
        torch.manual_seed(0)
        return ChunkFusionModel().to(device).eval(), "untrained (identity routing)"
    return load_module(path, device).model.eval(), str(path)
