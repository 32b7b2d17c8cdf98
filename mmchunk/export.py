"""Export of fused embeddings: pooled per sample (and per chunk) into safetensors shards + a manifest.

Layout of an export folder (`DIR`):

- `{shard}.part-{k:04d}.safetensors`: for up to `part_size` samples of input shard `{shard}`, in
  stream order: `embeddings [N, D]` (mean of the sample's fused chunks), `embedding_{m} [N, E]`
  (the contrastive audio / text embeddings), and with `per_chunk` every fused chunk:
  `values [C, D]`, `cu_seqlens [N+1]` int32, `t0`, `t1 [C]` float32 (seconds), `modality [C]`
  int64 (0 audio, 1 text, 2 video). The sample keys are in the file's metadata (`keys`, JSON).
- `{shard}.done.json`: the input shard is finished (its parts, counts, and the skipped samples).
- `manifest.json`: checkpoint SHA-256 and model config, settings, counts, files, versions.

Every file is written to a temporary name and renamed, so a file is whole or absent. A rerun skips
finished input shards, and in an unfinished one keeps the parts already written and exports only
the keys they lack, so no key is duplicated or dropped; rerunning a finished export changes no
byte. Under DDP (or `RANK` / `WORLD_SIZE` in the environment) rank `r` takes input shards
`r, r + W, …`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import safetensors
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm import tqdm

import mmchunk
from mmchunk.alignment import batch_byte_frames
from mmchunk.atomic import atomic_write, write_json
from mmchunk.checkpoint import file_sha256, load_module
from mmchunk.data import DataConfig, expand_urls, make_dataset
from mmchunk.longform import long_audio_chunks, long_audio_ctc
from mmchunk.ragged import Ragged
from mmchunk.ragged_ops import mean_pool
from mmchunk.training import batch_inputs

DTYPES = {"float16": torch.float16, "float32": torch.float32}
MODALITIES = ("audio", "text", "video")
FORMAT = "mmchunk-embeddings/1"
BATCH_SECONDS = 600.0  # audio per export batch: bounds memory, a longer sample goes alone


class Embeddings(NamedTuple):
    """What `load_embeddings` returns: sample keys `[N]`, pooled fused embeddings `[N, D]`, the
    contrastive embeddings per modality `{m: [N, E]}`, and with a per-chunk export the fused chunks
    (Ragged `[C, D]` over the N samples with `t_start`, `t_end` and `modality`), else None."""

    keys: list[str]
    embeddings: torch.Tensor
    modality_embeddings: dict[str, torch.Tensor]
    chunks: Ragged | None


def _rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def shard_name(url: str) -> str:
    """The export name of an input shard: its file name without `.tar`."""
    name = url.rstrip("/").rsplit("/", 1)[-1]
    return name[: -len(".tar")] if name.endswith(".tar") else name


def shard_sample_counts(urls: list[str]) -> int | None:
    """Samples in the local shards `urls` by the `sizes.json` beside them (what `ShardWriter` writes),
    or None when a shard is remote or not listed there: a progress bar's total."""
    total = 0
    for url in urls:
        sizes = Path(url).parent / "sizes.json"
        try:
            total += json.loads(sizes.read_text())[Path(url).name]
        except (OSError, ValueError, KeyError, TypeError):
            return None
    return total


def _parts(out: Path, name: str) -> list[Path]:
    return sorted(out.glob(f"{name}.part-*.safetensors"))


def _part_keys(path: Path) -> list[str]:
    with safe_open(path, "pt") as f:
        return json.loads(f.metadata()["keys"])


def encode_chunks(model, inputs: dict[str, Ragged], window_s: float) -> dict[str, Ragged]:
    """The main network's chunk outputs per modality (`ChunkFusionModel.encode`); a batch of one
    sample whose audio is longer than `window_s` gets its audio chunks window by window
    (`long_audio_chunks`: the chunks of one pass in bounded memory) before the main network, and
    with a CTC head its text chunks placed on the audio's axis as one pass places them
    (`long_audio_ctc`)."""
    audio = inputs.get("audio")
    rate = model.encoders["audio"].sample_rate
    if audio is None or audio.batch_size != 1 or audio.num_tokens <= window_s * rate:
        return model.encode(inputs).chunks
    rest = model.encode({m: x for m, x in inputs.items() if m != "audio"})
    chunks, routing = rest.chunks, rest.routing
    pooled, chunk_probs = long_audio_chunks(model, audio.values, window_s=window_s)
    chunks["audio"], _ = model.main(pooled)
    text = inputs.get("text")
    if model.ctc_head is not None and "text" in chunks and text.t_start is not None:
        rest.ctc = long_audio_ctc(model, audio.values, chunks["audio"], chunk_probs, window_s=window_s)
        rest.frames = batch_byte_frames(rest.ctc.values, rest.ctc.cu_seqlens, text)
        chunks["text"] = model.aligned_text(chunks["text"], routing["text"], rest, text)
    return chunks


def _export_batch(
    model, inputs: dict, modalities: Iterable[str], per_chunk: bool, window_s: float
) -> dict[str, torch.Tensor]:
    """Per-sample tensors of one batch (see the module docstring), float32 on the CPU."""
    chunks = encode_chunks(model, inputs, window_s)
    fused = model.fuse({m: chunks[m] for m in modalities if m in chunks})
    rows = {"embeddings": mean_pool(fused)}
    for m, emb in model.embed(chunks).items():
        rows[f"embedding_{m}"] = emb
    if per_chunk:
        rows.update(values=fused.values, lengths=fused.lengths, t0=fused.t_start, t1=fused.t_end)
        rows["modality"] = fused.modality
    return {k: v.detach().float().cpu() if v.is_floating_point() else v.cpu() for k, v in rows.items()}


def _select(rows: dict[str, torch.Tensor], keep: list[int]) -> dict[str, torch.Tensor]:
    """The samples `keep` of a batch's rows; chunk rows follow their samples."""
    out = {k: v[keep] for k, v in rows.items() if k not in ("values", "t0", "t1", "modality")}
    if "lengths" in rows:
        cu = torch.nn.functional.pad(rows["lengths"].cumsum(0), (1, 0))
        index = torch.cat([torch.arange(int(cu[i]), int(cu[i + 1])) for i in keep] or [torch.zeros(0).long()])
        out.update({k: rows[k][index] for k in ("values", "t0", "t1", "modality")})
    return out


def _merge(rows: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The rows of several batches as one (chunk rows follow their samples)."""
    return {k: torch.cat([r[k] for r in rows]) for k in rows[0]}


def _write_part(path: Path, keys: list[str], cat: dict[str, torch.Tensor], dtype: torch.dtype) -> None:
    """One safetensors part from the merged rows of its samples."""
    tensors = {k: v.to(dtype).contiguous() for k, v in cat.items() if k.startswith("embedding")}
    if "lengths" in cat:
        tensors["values"] = cat["values"].to(dtype).contiguous()
        tensors["cu_seqlens"] = torch.nn.functional.pad(cat["lengths"].cumsum(0), (1, 0)).to(torch.int32)
        tensors.update(t0=cat["t0"].float(), t1=cat["t1"].float(), modality=cat["modality"].long())
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={"keys": json.dumps(keys)}))


def export_embeddings(
    ckpt: str | Path,
    data: str | Path | list[str],
    out: str | Path,
    *,
    per_chunk: bool = False,
    modalities: Iterable[str] = ("audio", "text"),
    dtype: str = "float16",
    device: str = "cpu",
    part_size: int = 512,
    max_samples: int = 32,
    window_s: float = 60.0,
    progress: bool = True,
) -> dict:
    """Export the fused embeddings of the samples of `data` under `ckpt` into `out`; returns the
    manifest (see the module docstring) plus `seconds` and `samples_per_second` of this run.

    Batches hold up to `max_samples` samples and `BATCH_SECONDS` of audio; a longer sample goes
    alone, and its audio is chunked in windows of `window_s` (`encode_chunks`), so an hour-long
    recording exports in bounded memory."""
    modalities = tuple(dict.fromkeys(modalities))
    if unknown := [m for m in modalities if m not in MODALITIES]:
        raise ValueError(f"unknown modalities {unknown}; choose from {list(MODALITIES)}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
    out = Path(out)
    module = load_module(ckpt, device)  # a bad checkpoint fails before anything is written
    model = module.model.eval()
    if "video" in modalities and "video" not in model.encoders:
        raise ValueError(f"{ckpt}: the model has no video encoder, so --modalities cannot include video")
    config = DataConfig(
        video_fps=model.encoders["video"].native_rate_hz if "video" in model.encoders else 25.0,
        use_video="video" in modalities,
        require_text="text" in modalities,
        max_samples=max_samples,
        max_seconds=BATCH_SECONDS,
    )
    urls = expand_urls(data)
    out.mkdir(parents=True, exist_ok=True)
    rank, world = _rank_world()
    mine = [u for i, u in enumerate(urls) if i % world == rank]
    clock, exported = time.perf_counter(), 0
    total = shard_sample_counts(mine)
    bar = tqdm(total=total, unit="sample", desc=f"export rank {rank}", disable=not progress)
    for url in mine:
        name = shard_name(url)
        if (out / f"{name}.done.json").exists():
            continue
        parts = _parts(out, name)
        done = {k for p in parts for k in _part_keys(p)}
        pending_keys, pending_rows, skipped = [], [], []
        with torch.no_grad():
            for batch in make_dataset(url, config, split=False):
                skipped += [{"key": s.key, "reason": s.reason} for s in batch.skipped]
                keep = [i for i, k in enumerate(batch.keys) if k not in done]
                if not keep:
                    continue
                inputs = {m: v.to(device) for m, v in batch_inputs(batch).items()}
                rows = _select(_export_batch(model, inputs, modalities, per_chunk, window_s), keep)
                pending_keys += [batch.keys[i] for i in keep]
                pending_rows.append(rows)
                bar.update(len(keep))
                exported += len(keep)
                while len(pending_keys) >= part_size:  # parts of exactly `part_size`, the last one less
                    merged = _merge(pending_rows)
                    head, rest = list(range(part_size)), list(range(part_size, len(pending_keys)))
                    path = out / f"{name}.part-{len(parts):04d}.safetensors"
                    _write_part(path, pending_keys[:part_size], _select(merged, head), DTYPES[dtype])
                    parts = _parts(out, name)
                    pending_keys, pending_rows = pending_keys[part_size:], [_select(merged, rest)]
        if pending_keys:
            path = out / f"{name}.part-{len(parts):04d}.safetensors"
            _write_part(path, pending_keys, _merge(pending_rows), DTYPES[dtype])
            parts = _parts(out, name)
        counts = [len(_part_keys(p)) for p in parts]
        write_json(
            out / f"{name}.done.json",
            {"shard": url, "parts": [p.name for p in parts], "samples": counts, "skipped": skipped},
        )
    bar.close()
    if world > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    manifest = write_manifest(out, urls, ckpt, module, modalities, per_chunk, dtype)
    seconds = time.perf_counter() - clock
    return {**manifest, "seconds": seconds, "exported": exported, "samples_per_second": exported / seconds}


def write_manifest(
    out: Path,
    urls: list[str],
    ckpt: str | Path,
    module: torch.nn.Module,
    modalities: Iterable[str],
    per_chunk: bool,
    dtype: str,
) -> dict:
    """`manifest.json` from the finished shards in `out` (rewritten only when its content changes)."""
    files, samples, skipped, pending = [], 0, [], []
    for url in urls:
        done = out / f"{shard_name(url)}.done.json"
        if not done.exists():
            pending.append(url)
            continue
        record = json.loads(done.read_text())
        files += [{"file": f, "samples": n} for f, n in zip(record["parts"], record["samples"])]
        samples += sum(record["samples"])
        skipped += record["skipped"]
    manifest = {
        "format": FORMAT,
        "checkpoint": {"path": str(ckpt), "sha256": file_sha256(ckpt)},
        "model": {k: v for k, v in sorted(module.hparams.items())},
        "modalities": list(modalities),
        "per_chunk": per_chunk,
        "dtype": dtype,
        "complete": not pending,
        "pending_shards": pending,
        "counts": {"samples": samples, "skipped": len(skipped), "files": len(files), "shards": len(urls)},
        "files": files,
        "skipped": skipped,
        "versions": {
            "mmchunk": mmchunk.__version__,
            "torch": torch.__version__.split("+")[0],
            "safetensors": safetensors.__version__,
        },
    }
    path = out / "manifest.json"
    text = json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n"
    if not path.exists() or path.read_text() != text:
        atomic_write(path, lambda tmp: tmp.write_text(text))
    return manifest


def load_embeddings(folder: str | Path) -> Embeddings:
    """Read an export folder back (safetensors only, no pickle): see `Embeddings`."""
    folder = Path(folder)
    path = folder / "manifest.json"
    if not path.exists():
        raise FileNotFoundError(f"{folder}: no manifest.json (not an mmchunk export, or unfinished)")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: unknown export format {manifest.get('format')!r}")
    keys, tensors = [], {}
    for entry in manifest["files"]:
        file = folder / entry["file"]
        try:
            with safe_open(file, "pt") as f:
                part_keys = json.loads(f.metadata()["keys"])
                for name in f.keys():  # noqa: SIM118 - safe_open has no __iter__
                    tensors.setdefault(name, []).append(f.get_tensor(name))
        except Exception as exc:  # a missing, truncated or foreign file
            raise ValueError(f"{file}: unreadable export part ({' '.join(str(exc).split())[:160]})") from None
        if len(part_keys) != entry["samples"]:
            raise ValueError(f"{file}: holds {len(part_keys)} samples, the manifest says {entry['samples']}")
        keys += part_keys
    if not keys:
        return Embeddings([], torch.zeros(0, 0), {}, None)
    modality_embeddings = {
        n[len("embedding_") :]: torch.cat(v) for n, v in tensors.items() if n.startswith("embedding_")
    }
    chunks = None
    if "values" in tensors:
        lengths = torch.cat([cu[1:] - cu[:-1] for cu in tensors["cu_seqlens"]])
        chunks = Ragged(
            torch.cat(tensors["values"]),
            torch.nn.functional.pad(lengths.cumsum(0), (1, 0)).to(torch.int32),
            t_start=torch.cat(tensors["t0"]),
            t_end=torch.cat(tensors["t1"]),
            modality=torch.cat(tensors["modality"]),
        )
    return Embeddings(keys, torch.cat(tensors["embeddings"]), modality_embeddings, chunks)
