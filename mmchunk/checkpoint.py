"""Loading training checkpoints safely: tensors and plain containers only, never pickled objects."""

from __future__ import annotations

import hashlib
import inspect
import pickle
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
    hparams = {k: v for k, v in ckpt["hyper_parameters"].items() if k in accepted}
    try:
        module = AudioTextModule(**hparams)
        module.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, TypeError, ValueError, KeyError) as exc:
        reason = " ".join(str(exc).split())[:160]
        raise ValueError(f"{path}: its weights do not fit the model it describes ({reason})") from None
    return module.to(device)


def init_from_checkpoint(module: torch.nn.Module, path: str | Path) -> tuple[int, list[str], list[str]]:
    """Copy into `module` every tensor of a checkpoint of `mmchunk fit` (`read_checkpoint`) whose
    name it has (fine-tuning, or a recipe that adds a stage to a trained model). Returns (tensors
    copied, the module's names the checkpoint lacks, the checkpoint's names the module lacks). A
    tensor whose shape differs is a one-line ValueError naming the file and the tensor."""
    source = read_checkpoint(path)["state_dict"]
    target = module.state_dict()
    for name, value in source.items():
        if name in target and target[name].shape != value.shape:
            raise ValueError(
                f"{path}: {name} is {tuple(value.shape)} there and {tuple(target[name].shape)} in this "
                "model (init_from copies weights between models of the same widths)"
            )
    shared = {name: value for name, value in source.items() if name in target}
    module.load_state_dict(shared, strict=False)
    return len(shared), sorted(set(target) - set(source)), sorted(set(source) - set(target))


def load_model(path: str | Path | None, device: str | torch.device = "cpu") -> tuple[ChunkFusionModel, str]:
    """The eval-mode model of a checkpoint (see `load_module`), or with `path` None an untrained
    default model (seed 0, identity routing); and a label saying which."""
    if path is None:
        torch.manual_seed(0)
        return ChunkFusionModel().to(device).eval(), "untrained (identity routing)"
    return load_module(path, device).model.eval(), str(path)
