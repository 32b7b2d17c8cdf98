"""Segmenting one file with the learned chunker: where do the chunks of this recording fall?"""

from __future__ import annotations

import itertools
from pathlib import Path

import torch

from mmchunk.alignment import ctc_word_onsets, ctc_word_spans, even_word_spans
from mmchunk.atomic import atomic_write
from mmchunk.checkpoint import load_model
from mmchunk.data.decode import (
    AUDIO_EXTS,
    TEXT_EXTS,
    VIDEO_EXTS,
    DecodeError,
    decode_audio,
    decode_container_audio,
    decode_text,
    decode_video,
)
from mmchunk.data.loader import text_byte_times
from mmchunk.longform import audio_length, long_audio_boundaries, read_blocks, waveform_envelope
from mmchunk.model import ChunkFusionModel
from mmchunk.ragged import Ragged
from mmchunk.streaming import StreamingSegmenter


def read_inputs(path: Path, model: ChunkFusionModel) -> tuple[dict[str, Ragged], float]:
    """The model inputs of a media file (one-sequence Ragged batches with time spans, by modality)
    and its duration in s. A video file gives its frames and, when it has an audio track, its sound."""
    ext = path.suffix.lower().lstrip(".")
    data = path.read_bytes()
    rate = model.encoders["audio"].sample_rate
    if ext in AUDIO_EXTS:
        wave, _ = decode_audio(data, rate)
        return {"audio": Ragged.from_list([wave])}, wave.numel() / rate
    if ext in VIDEO_EXTS:
        if "video" not in model.encoders:
            raise ValueError(f"{path}: this model has no video encoder")
        fps = model.encoders["video"].native_rate_hz
        frames, times, duration = decode_video(data, fps, (48, 64))
        ends = (torch.arange(1, len(times) + 1, dtype=torch.float64) / fps).clamp(max=duration).float()
        inputs = {"video": Ragged.from_list([frames], t_start=[times], t_end=[ends])}
        sound = decode_container_audio(data, rate)
        if sound is not None:
            inputs["audio"] = Ragged.from_list([sound[0]])
            duration = max(duration, sound[0].numel() / rate)
        return inputs, duration
    if ext in TEXT_EXTS:
        text = decode_text(data)
        start, end = text_byte_times(text, None, len(text.encode()) / model.encoders["text"].native_rate_hz)
        values = torch.tensor(list(text.encode()), dtype=torch.int64)
        return {"text": Ragged.from_list([values], t_start=[start], t_end=[end])}, float(end[-1])
    known = ", ".join(f".{e}" for e in AUDIO_EXTS + VIDEO_EXTS + TEXT_EXTS)
    raise ValueError(f"{path}: unsupported file type .{ext} (known: {known})")


def text_chunks(mask: torch.Tensor, data: bytes, t_start: torch.Tensor, t_end: torch.Tensor) -> list[dict]:
    """Text chunks from the chunker's boundary mask over the UTF-8 bytes `data` (`[S]`, byte time
    spans `t_start`, `t_end [S]`): a boundary inside a multi-byte character moves to the
    character's first byte, so every chunk is whole characters. Each chunk has its byte and
    character offsets (`byte0`, `byte1`, `char0`, `char1`), its `text`, and its times."""
    lead = [(b & 0xC0) != 0x80 for b in data]  # continuation bytes are 10xxxxxx
    char_of = list(itertools.accumulate(lead, initial=0))  # characters before each byte offset
    first_byte = list(itertools.accumulate(range(len(data)), lambda prev, i: i if lead[i] else prev))
    starts = sorted({0, *(first_byte[i] for i in mask.nonzero().squeeze(1).tolist())})
    return [
        {"modality": "text", "t0": round(float(t_start[a]), 4), "t1": round(float(t_end[b - 1]), 4),
         "byte0": a, "byte1": b, "char0": char_of[a], "char1": char_of[b], "text": data[a:b].decode()}
        for a, b in itertools.pairwise([*starts, len(data)])
    ]  # fmt: skip


def audio_chunks(starts: torch.Tensor, frames: int, length: int, hop: int, rate: int) -> list[dict]:
    """Audio chunks from the frame indices of their starts `[C]` (the first 0) in a recording of
    `frames` frames and `length` samples: contiguous spans from integer sample positions, the last
    ending at the recording's end."""
    edges = [*starts.tolist(), frames]
    seconds = [round(min(f * hop, length) / rate, 4) for f in edges]
    return [{"modality": "audio", "t0": a, "t1": b} for a, b in itertools.pairwise(seconds)]


def place_words(ctc: Ragged | None, text: str, duration: float) -> tuple[list[dict], str]:
    """The words of `text` on the time axis of one clip: `[{"word", "start", "end"}]` in s and the
    method: "ctc" (forced alignment on the CTC head's log-probabilities `ctc [T, 257]` of the clip,
    `mmchunk.alignment`), or "even" (bytes spread evenly over `duration`) without a CTC head (None)
    or for a transcript too long for the clip's frames. No true timing is read."""
    spans = None if ctc is None else ctc_word_spans(ctc, [text])[0]
    method = "ctc" if spans is not None else "even"
    spans = spans if spans is not None else even_word_spans(text, duration)
    words = [{"word": w, "start": round(a, 4), "end": round(b, 4)} for w, (a, b) in zip(text.split(), spans)]
    return words, method


def segment_file(
    path: str | Path,
    checkpoint: str | Path | None = None,
    *,
    window_s: float = 60.0,
    context_s: float = 10.0,
    text: str | None = None,
) -> dict:
    """Chunk one audio, video or text file: `{"file", "modality", "modalities", "duration",
    "checkpoint", "compression", "chunks": [{"modality", "t0", "t1"}, ...]}`. A video with sound
    gives the chunks of both on one time axis (ordered by start; "modality" is the file's kind,
    "modalities" every one chunked, "compression" tokens per chunk over all of them, and
    "compression_by_modality" each one's). An audio file longer than `window_s` is read and chunked
    window by window with `context_s` on either side (`mmchunk.longform`: bounded memory, the
    boundaries of one pass); "windows" says how many. A causal audio encoder (`level: causal`)
    streams such a file instead (`mmchunk.streaming`: the same chunks as one pass, in bounded memory).
    Within one window, with a second chunking stage, an audio report gains its coarse chunks
    ("stage2_chunks": words with `onset_weight`); with a CTC head, the "word_onsets" (s) the head
    finds without a transcript (`ctc_word_onsets`). `text`: the recording's transcript; the report
    gains its "words" with their times and the "alignment" method (`place_words`)."""
    path = Path(path)
    if text is not None and not text.split():
        raise ValueError(f"{path}: the transcript to align is empty")
    model, label = load_model(checkpoint)
    encoder = model.encoders["audio"]
    windows = 1
    if path.suffix.lower().lstrip(".") in AUDIO_EXTS:
        length = audio_length(path, encoder.sample_rate)
        if length > window_s * encoder.sample_rate:
            if text is not None:
                raise ValueError(f"{path}: a transcript is aligned within one window of {window_s:g} s; "
                                 "this recording is longer (raise --window)")  # fmt: skip
            frames = -(-length // encoder.hop)
            if getattr(encoder, "level", "") == "causal":
                blocks = read_blocks(path, encoder.sample_rate, 30.0)
                chunks = list(StreamingSegmenter(model).stream(blocks))
            else:
                starts, frames, length = long_audio_boundaries(
                    model, path, window_s=window_s, context_s=context_s
                )
                windows = -(-frames // max(1, round(window_s * encoder.native_rate_hz)))
                chunks = audio_chunks(starts, frames, length, encoder.hop, encoder.sample_rate)
            seconds = length / encoder.sample_rate
            return _report(path, label, {"audio": frames}, {"audio": len(chunks)}, chunks, seconds, windows)
    try:
        inputs, duration = read_inputs(path, model)
    except DecodeError as exc:
        raise DecodeError(f"{path}: {exc}") from None
    chunks, tokens, counts, coarse = [], {}, {}, None
    for modality, x in inputs.items():
        with torch.no_grad():
            feats = model.encoders[modality](x)
            routed = model.route(modality, x, feats)
        tokens[modality], counts[modality] = feats.num_tokens, routed.chunks.num_tokens
        if modality == "audio":
            starts = routed.boundary_mask.nonzero().squeeze(1)
            span = (feats.num_tokens, x.num_tokens, encoder.hop, encoder.sample_rate)
            chunks += audio_chunks(starts, *span)
            if getattr(model.main, "chunker", None) is not None:  # a second stage: its coarse chunks
                with torch.no_grad():
                    _, inner = model.main(routed.chunks)
                coarse = audio_chunks(starts[inner.boundary_mask], *span)
            continue
        if modality == "text":
            own = text_chunks(routed.boundary_mask, bytes(x.values.tolist()), x.t_start, x.t_end)
            chunks, counts[modality] = chunks + own, len(own)
            continue
        chunks += [
            {"modality": modality, "t0": round(float(a), 4), "t1": round(float(b), 4)}
            for a, b in zip(routed.chunks.t_start, routed.chunks.t_end)
        ]
    chunks.sort(key=lambda c: (c["t0"], c["modality"]))
    report = _report(path, label, tokens, counts, chunks, duration, windows)
    if coarse is not None:
        report["stage2_chunks"] = coarse
    if text is not None and "audio" not in inputs:
        raise ValueError(f"{path}: a transcript is aligned to audio, and this file has none")
    ctc = None
    if "audio" in inputs and model.ctc_head is not None:
        with torch.no_grad():
            ctc = model.encode({"audio": inputs["audio"]}).ctc
        report["word_onsets"] = [round(t, 4) for t in ctc_word_onsets(ctc)[0]]
    if text is not None:
        report["words"], report["alignment"] = place_words(ctc, text, duration)
    return report


def _report(
    path: Path, label: str, tokens: dict, counts: dict, chunks: list, duration: float, windows: int
) -> dict:
    return {
        "file": str(path),
        "modality": next(iter(tokens)),
        "modalities": list(tokens),
        "duration": round(duration, 4),
        "checkpoint": label,
        "compression": round(sum(tokens.values()) / max(sum(counts.values()), 1), 3),
        "compression_by_modality": {m: round(tokens[m] / max(counts[m], 1), 3) for m in tokens},
        "windows": windows,
        "chunks": chunks,
    }


def plot_segments(report: dict, path: str | Path, sample_rate: int = 16_000) -> None:
    """A timeline of the chunks of `segment_file`'s report (one band per modality), over the waveform
    for an audio file, with the transcript's words where the report has them (`--text`), a second
    stage's coarse chunks (black dashes) and the CTC head's word onsets (purple ticks at the top)
    where it has those."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 1.8))
    if report["modality"] == "audio":
        times, peaks = waveform_envelope(report["file"], sample_rate)
        peaks = peaks / (float(peaks.max()) or 1.0)
        ax.fill_between(times.numpy(), -peaks.numpy(), peaks.numpy(), color="0.3", linewidth=0)
    rows = report["modalities"]  # one band per modality, on one time axis
    for row, modality in enumerate(rows):
        band = {"ymin": row / len(rows), "ymax": (row + 1) / len(rows)}
        own = [c for c in report["chunks"] if c["modality"] == modality]
        for i, chunk in enumerate(own):
            ax.axvspan(
                chunk["t0"], chunk["t1"], color="tab:blue" if i % 2 else "tab:orange", alpha=0.35, **band
            )
            ax.axvline(chunk["t0"], color="tab:red", linewidth=0.8, **band)
    for word in report.get("words", []):  # the transcript placed by `place_words`
        ax.axvline(word["start"], color="tab:green", linewidth=1.0, linestyle=":")
        ax.text(word["start"], 0.8, word["word"], fontsize=7, color="tab:green")
    for chunk in report.get("stage2_chunks", []):  # a second stage's coarse chunks
        ax.axvline(chunk["t0"], color="black", linewidth=1.6, linestyle="--")
    onsets = report.get("word_onsets", [])
    ax.plot(onsets, [0.93] * len(onsets), "v", color="tab:purple", markersize=4)
    ax.set_xlim(0, report["duration"])
    ax.set_yticks([(row + 0.5) / len(rows) * 2 - 1 for row in range(len(rows))], rows)
    ax.set_ylim(-1, 1)
    ax.set_xlabel("time (s)")
    ax.set_title(f"{Path(report['file']).name}: {len(report['chunks'])} {'+'.join(rows)} chunks", fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110))
    plt.close(fig)
