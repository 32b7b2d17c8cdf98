"""Where does the segmenter cut real human speech? Chunks of recorded (not synthesized) speech
against the pauses that Silero VAD finds in it.

For every file: `mmchunk.segment.segment_file` (with `--ckpt`, or the untrained model), the audio
decoded at 16 kHz, Silero VAD's speech spans, and a table row with the file's duration, its speech
time, the number of chunks, chunks per second of speech, how many chunk boundaries (chunk starts
after the first) fall inside a pause (a non-speech gap between, before or after Silero's speech
spans, counting only boundaries more than 20 ms from the pause's edges), that share of all
boundaries, and the share of the file's time that is pause. A segmenter that cuts at phrase edges
puts its boundaries near pause edges, not deep inside pauses; one that cuts at random puts about
"pause time" of its boundaries in pauses. No transcript or timing of the recordings is used.

Recordings by real speakers that package registries ship (licences in each package):

    # Debian: ALSA's channel-test voice (alsa-utils 1.2.8-1, GPL-2; one speaker, 48 kHz,
    # ~1.4 s each: "Front Center", "Front Left", ...)
    cd /tmp && apt-get download alsa-utils && dpkg-deb -x alsa-utils_*.deb /tmp/rec
    ls /tmp/rec/usr/share/sounds/alsa/*.wav      # Noise.wav is not speech

    # Debian: Asterisk's telephone prompts (8 kHz mono 16-bit WAV; 500-600 prompts each, the
    # longest 20-85 s of read sentences with pauses). asterisk-core-sounds-*-wav 1.6.1-1:
    # en_US_f_Allison (Allison Smith, CC-BY-SA-3.0), es_MX_f_Allison (the same speaker in
    # Spanish), fr_CA_f_June (June Wallack, CC-BY-SA-3.0), it_IT_m_Carlo (Carlo Flora, CC-BY-3.0),
    # ru_RU_f_IvrvoiceRU (ivrvoice.ru, CC-BY-3.0); asterisk-prompt-it-menardi-wav
    # 1:1.4.22+mm20110907-3.1: it_IT_f_Menardi (Paola Dal Zot, CC-BY-SA-3.0 Italian).
    cd /tmp && apt-get download asterisk-core-sounds-en-wav asterisk-core-sounds-es-wav \\
        asterisk-core-sounds-fr-wav asterisk-core-sounds-it-wav asterisk-core-sounds-ru-wav \\
        asterisk-prompt-it-menardi-wav
    for d in asterisk-*.deb; do dpkg-deb -x "$d" /tmp/rec; done
    ls /tmp/rec/usr/share/asterisk/sounds/*/demo-congrats.wav   # ~27-39 s each, 6 speakers

    # PyPI, source distributions (pip builds only their metadata, under a minute each):
    # pocketsphinx 5.1.1 (BSD-2, CMU): five LibriVox sentences (public domain reading of "Sense
    # and Sensibility", one reader, 16 kHz, 3-7 s) with transcripts (.txt) and pocketsphinx's
    # word alignments (.json, "<sil>" entries are pauses) in test/data/librivox/;
    # pysptk 1.0.1: CMU ARCTIC sentence a0007 (CMU's free licence in example_audio_data/COPYING;
    # 16 kHz, 4.0 s); praat-parselmouth 0.4.7 (GPL-3): "The north wind and the sun" (44.1 kHz,
    # 1.3 s) in docs/examples/audio/.
    cd /tmp && for p in pocketsphinx==5.1.1 pysptk==1.0.1 praat-parselmouth==0.4.7; do
        pip download --no-deps --no-binary "${p%%==*}" "$p" -d /tmp; done
    tar xzf pocketsphinx-5.1.1.tar.gz pocketsphinx-5.1.1/test/data/librivox
    tar xzf pysptk-1.0.1.tar.gz pysptk-1.0.1/pysptk/example_audio_data
    tar xzf praat_parselmouth-0.4.7.tar.gz praat_parselmouth-0.4.7/docs/examples/audio

Run: `python benchmarks/real_recordings.py [--ckpt runs/demo/model.ckpt] [--json] FILES...`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mmchunk.data.decode import decode_audio
from mmchunk.evaluation import fraction_inside
from mmchunk.segment import segment_file
from mmchunk.vad import silero_speech_spans

RATE = 16_000
EDGE_MARGIN = 0.02  # s: a boundary this close to a pause edge is at the edge, not inside the pause


def pauses_of(spans: list[list[float]], duration: float) -> list[list[float]]:
    """The non-speech gaps `[start, end]` (s) of `[0, duration]` around and between speech spans."""
    gaps, t = [], 0.0
    for start, end in spans:
        if start > t:
            gaps.append([t, start])
        t = max(t, end)
    if t < duration:
        gaps.append([t, duration])
    return gaps


def measure(path: Path, checkpoint: str | None) -> dict:
    """One file's row: chunking by the segmenter against Silero VAD's pauses."""
    report = segment_file(path, checkpoint)
    wave, native = decode_audio(path.read_bytes(), RATE)
    duration = wave.numel() / RATE
    spans = silero_speech_spans(wave, RATE)
    pauses = pauses_of(spans, duration)
    speech = sum(e - s for s, e in spans)
    boundaries = [c["t0"] for c in report["chunks"][1:]]
    in_pause, n = fraction_inside(boundaries, pauses, EDGE_MARGIN)
    return {
        "file": str(path),
        "sample_rate": native,
        "duration": round(duration, 3),
        "speech": round(speech, 3),
        "speech_spans": len(spans),
        "chunks": len(report["chunks"]),
        "chunks_per_speech_s": round(len(report["chunks"]) / speech, 3) if speech else None,
        "boundaries": n,
        "boundaries_in_pauses": in_pause,
        "boundary_pause_share": round(in_pause / n, 3) if n else None,
        "pause_time_share": round(1 - speech / duration, 3) if duration else None,
        "checkpoint": report["checkpoint"],
    }


def total(rows: list[dict]) -> dict:
    """The rows added up (shares of the sums)."""
    dur, speech = sum(r["duration"] for r in rows), sum(r["speech"] for r in rows)
    chunks, n = sum(r["chunks"] for r in rows), sum(r["boundaries"] for r in rows)
    hits = sum(r["boundaries_in_pauses"] for r in rows)
    return {
        "file": f"all {len(rows)} files",
        "duration": round(dur, 3),
        "speech": round(speech, 3),
        "speech_spans": sum(r["speech_spans"] for r in rows),
        "chunks": chunks,
        "chunks_per_speech_s": round(chunks / speech, 3) if speech else None,
        "boundaries": n,
        "boundaries_in_pauses": hits,
        "boundary_pause_share": round(hits / n, 3) if n else None,
        "pause_time_share": round(1 - speech / dur, 3) if dur else None,
    }


def short_name(path: str) -> str:
    """The file name with its folder (Asterisk's prompts share names across speakers' folders)."""
    p = Path(path)
    return f"{p.parent.name}/{p.name}" if p.parent.name else p.name


def print_table(rows: list[dict], summary: dict) -> None:
    def fmt(v: float | None, spec: str) -> str:
        return "-" if v is None else format(v, spec)

    head = ("file", "rate", "dur s", "speech s", "spans", "chunks", "chunks/speech s", "bnd in pause",
            "bnd share", "pause time")  # fmt: skip
    width = max(len(short_name(r["file"])) for r in [*rows, summary]) + 2
    print(f"{head[0]:<{width}}" + "".join(f"{h:>{len(h) + 2 if len(h) > 7 else 9}}" for h in head[1:]))
    for r in [*rows, summary]:
        cells = [
            str(r.get("sample_rate", "")),
            f"{r['duration']:.2f}",
            f"{r['speech']:.2f}",
            str(r["speech_spans"]),
            str(r["chunks"]),
            fmt(r["chunks_per_speech_s"], ".2f"),
            f"{r['boundaries_in_pauses']}/{r['boundaries']}",
            fmt(r["boundary_pause_share"], ".3f"),
            fmt(r["pause_time_share"], ".3f"),
        ]
        name = short_name(r["file"]) if r is not summary else r["file"]
        print(
            f"{name:<{width}}"
            + "".join(f"{c:>{len(h) + 2 if len(h) > 7 else 9}}" for c, h in zip(cells, head[1:]))
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("files", nargs="+", type=Path, help="audio files (wav, flac, mp3, ogg)")
    parser.add_argument(
        "--ckpt", default=None, help="a Lightning .ckpt of the project (default: untrained model)"
    )
    parser.add_argument("--json", action="store_true", help="print the rows and the total as JSON instead")
    args = parser.parse_args(argv)
    missing = [str(f) for f in args.files if not f.is_file()]
    if missing:
        parser.error(f"no such file: {', '.join(missing)}")
    rows = [measure(f, args.ckpt) for f in args.files]
    summary = total(rows)
    if args.json:
        print(json.dumps({"rows": rows, "total": summary}, indent=1))
        return 0
    margin_ms = round(EDGE_MARGIN * 1000)
    print(f"segmenter: {rows[0]['checkpoint']}; pauses: Silero VAD (mmchunk.vad defaults); a boundary")
    print(f"counts in a pause when it is more than {margin_ms} ms from the pause's edges")
    print_table(rows, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
