"""Word alignment on recordings with a reference alignment made elsewhere (issue 13).

Each `NAME.wav` in the folders given needs `NAME.txt` (the transcript) and `NAME.json`, a word
alignment in pocketsphinx's JSON form (`{"w": [{"t": word, "b": start s, "d": duration s}, ...]}`,
`<sil>`-like entries and pronunciation variants such as `to(3)` allowed), as pocketsphinx ships for
its LibriVox test sentences (pocketsphinx 5.1.1 sdist, `test/data/librivox/`; see
`real_recordings.py` for where to fetch it). `mmchunk segment FILE --text TRANSCRIPT` places the words
with the checkpoint's CTC head; the table scores them, and the evenly-spread rule, against the
reference: share of words within 50 and 100 ms of the reference start, median error. A last line
scores the word onsets the CTC head finds without the transcript (`ctc_word_onsets`) against the
reference starts: boundary F1 and R-value at 50 ms.

    python benchmarks/real_alignment.py --ckpt runs/demo_align/model.ckpt \
        pocketsphinx-5.1.1/test/data/librivox
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from mmchunk.alignment import alignment_scores, even_word_spans
from mmchunk.metrics import boundary_scores
from mmchunk.segment import segment_file


def reference_words(path: Path) -> list[dict]:
    """The words of a pocketsphinx alignment file, silences and fillers (`<…>`, `[…]`) left out."""
    entries = json.loads(path.read_text())["w"]
    words = [w for w in entries if not w["t"].startswith(("<", "["))]
    return [{"word": re.sub(r"\(\d+\)$", "", w["t"]), "start": float(w["b"])} for w in words]


def cells(s: dict) -> str:
    """The three score columns of one row."""
    return f"{s['align_within_50ms']:>7.3f}{s['align_within_100ms']:>8.3f}{s['align_median_error_ms']:>10.0f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="folders of NAME.wav + NAME.txt + NAME.json")
    parser.add_argument("--ckpt", type=Path, required=True, help="a checkpoint with a CTC head (align_cpu)")
    args = parser.parse_args(argv)
    rows, predicted, even, reference, skipped = [], [], [], [], 0
    # transcript-free word onsets, a second stage's chunk starts and the reference, clips 10 s apart
    onsets, coarse, offset = ([], []), [], 0.0
    for wav in sorted(p for folder in args.folders for p in folder.glob("*.wav")):
        if not wav.with_suffix(".txt").is_file() or not wav.with_suffix(".json").is_file():
            print(f"skipped {wav}: no .txt transcript or .json alignment beside it")
            skipped += 1
            continue
        text = wav.with_suffix(".txt").read_text().strip()
        try:
            ref = reference_words(wav.with_suffix(".json"))
        except (ValueError, KeyError, TypeError, AttributeError):
            print(f"skipped {wav}: {wav.with_suffix('.json').name} is not a pocketsphinx word alignment")
            skipped += 1
            continue
        if [w["word"] for w in ref] != text.split():
            print(f"skipped {wav}: the alignment's words are not the transcript's")
            skipped += 1
            continue
        report = segment_file(wav, args.ckpt, text=text)
        predicted.append([w["start"] for w in report["words"]])
        even.append([a for a, _ in even_word_spans(text, report["duration"])])
        reference.append([w["start"] for w in ref])
        onsets[0].extend(t + offset for t in report.get("word_onsets", []))
        onsets[1].extend(t + offset for t in reference[-1])
        coarse.extend(c["t0"] + offset for c in report.get("stage2_chunks", [])[1:])  # the first is forced
        offset += report["duration"] + 10.0
        one = alignment_scores(predicted[-1:], reference[-1:])
        rows.append((wav.name, report["duration"], len(ref), report["alignment"], one))
    if not rows:
        parser.error(f"no recording with a transcript and a reference alignment ({skipped} skipped)")
    print(f"{'file':<48}{'s':>6}{'words':>7}  method  {'≤50 ms':>7}{'≤100 ms':>8}{'median ms':>10}")
    for name, seconds, count, method, s in rows:
        print(f"{name:<48}{seconds:>6.2f}{count:>7}  {method:<6}  {cells(s)}")
    for label, placed in (("all, aligned", predicted), ("all, evenly spread", even)):
        s = alignment_scores(placed, reference)
        print(f"{label:<48}{'':>6}{int(s['align_words']):>7}  {'':<6}  {cells(s)}")
    if onsets[0]:
        found = boundary_scores(*onsets, 0.05)
        print(f"word onsets without the transcript: F1@50 {found['f1']:.3f}, R-value {found['r_value']:.3f}")
    if coarse:
        found = boundary_scores(coarse, onsets[1], 0.05)
        print(f"stage-2 chunk starts (audio alone): F1@50 {found['f1']:.3f}, R-value {found['r_value']:.3f}")
    print(f"{len(rows)} recordings scored, {skipped} skipped")


if __name__ == "__main__":
    main()
