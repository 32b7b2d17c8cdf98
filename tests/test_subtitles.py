"""Subtitle cues (SRT, WebVTT) as the text's input timings: parsing, errors, packing and loading."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from mmchunk.data import DataConfig, make_dataset
from mmchunk.data.augment import _scale_times
from mmchunk.data.loader import text_byte_times
from mmchunk.data.pack import pack_folder
from mmchunk.data.subtitles import Cue, SubtitleError, cue_words, parse_subtitles, read_subtitles

SRT = """1
00:00:00,500 --> 00:00:01,250
Hello <i>there</i>,
  old   friend

2
00:00:02,000 --> 00:00:03,000 X1:40
it works

3
00:00:03,000 --> 00:00:03,500

"""

VTT = """WEBVTT - a title
Kind: captions

NOTE a comment
that spans lines

STYLE
::cue { color: lime }

intro
00:00.500 --> 00:01.250 align:start position:10%
<v Ann>Hello there,</v>

01:00:02.000 --> 01:00:03.000
it works
"""


def test_srt_and_vtt_give_the_same_cues():
    srt = parse_subtitles(SRT, "a.srt")
    assert srt == [Cue(0.5, 1.25, "Hello there, old friend"), Cue(2.0, 3.0, "it works")]
    vtt = parse_subtitles(VTT, "a.vtt")
    assert vtt == [Cue(0.5, 1.25, "Hello there,"), Cue(3602.0, 3603.0, "it works")]
    assert parse_subtitles("\ufeff" + SRT, "bom.srt") == srt  # a byte-order mark is not text
    assert parse_subtitles("WEBVTT\n", "empty.vtt") == []


@pytest.mark.parametrize(
    ("kind", "text", "line", "what"),
    [
        ("srt", "1\n00:00:01,000 -> 00:00:02,000\nhi\n", 1, "needs a 'start --> end'"),
        ("srt", "1\n00:00:01,000 --> 00:00:02\nhi\n", 2, "bad cue timing"),
        ("srt", "1\n00:00:01,000 --> 00:00:02,000\nok\n\n2\n00:00:05,000 --> 00:00:04,000\nx\n", 6, "ends"),
        ("vtt", "WEBVTT\n\n00:01.000 --> 00:02.000\nok\n\n00:0x.000 --> 00:03.000\nbad\n", 6, "bad cue"),
        ("vtt", "1\n00:01.000 --> 00:02.000\nno header\n", 1, "starts with 'WEBVTT'"),
    ],
)
def test_malformed_cues_name_the_file_and_line(tmp_path, kind, text, line, what):
    path = tmp_path / f"bad.{kind}"
    path.write_text(text)
    with pytest.raises(SubtitleError, match=what) as info:
        read_subtitles(path)
    assert str(info.value).startswith(f"{path}:{line}: ") and "\n" not in str(info.value)


def test_non_utf8_subtitles_are_one_line_errors(tmp_path):
    path = tmp_path / "latin1.srt"
    path.write_bytes("1\n00:00:01,000 --> 00:00:02,000\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(SubtitleError, match="not UTF-8") as info:
        read_subtitles(path)
    assert str(info.value).startswith(str(path))


def test_cue_words_share_each_cue_by_byte_length():
    words = cue_words([Cue(1.0, 2.0, "ab c"), Cue(4.0, 4.0, "x")])
    assert [w["word"] for w in words] == ["ab", "c", "x"]
    spans = [t for w in words for t in (w["start"], w["end"])]
    assert spans == pytest.approx([1.0, 5 / 3, 5 / 3, 2.0, 4.0, 4.0])
    start, end = text_byte_times("ab c x", words, 6.0)  # the loader's rule: bytes take their word's span
    assert start.tolist() == pytest.approx([1.0, 1.0, 5 / 3, 5 / 3, 2.0, 4.0])
    assert bool((end >= start).all()) and bool((start[1:] >= start[:-1]).all())  # monotonic
    assert cue_words([]) == []
    spaced = cue_words([Cue(0.0, 1.0, " "), Cue(0.0, 2.0, "a  b ")])  # from a hand-written JSON
    assert [(w["word"], w["start"], w["end"]) for w in spaced] == [("a", 0.0, 1.0), ("b", 1.0, 2.0)]


def test_speed_perturbation_scales_the_cues():
    meta = _scale_times({"cues": [[1.0, 2.0, "a b"]]}, 0.5)
    assert meta["cues"] == [[2.0, 4.0, "a b"]]


def test_packed_subtitles_time_the_text(tmp_path):
    src = tmp_path / "media"
    src.mkdir()
    soundfile.write(src / "a.wav", np.zeros(64_000, np.float32) + 0.01, 16_000)
    (src / "a.srt").write_text(SRT)
    soundfile.write(src / "b.wav", np.zeros(16_000, np.float32) + 0.01, 16_000)
    (src / "b.vtt").write_text("no header\n")
    report = pack_folder(src, tmp_path / "out", name="subs")
    assert report.written == 2  # b keeps its audio; its broken subtitles are a reported skip
    assert [(Path(p).name, r.split(": ", 1)[1]) for p, r in report.skipped] == [
        ("b.vtt", "a WebVTT file starts with 'WEBVTT'")
    ]
    with tarfile.open(next((tmp_path / "out").glob("*.tar"))) as tar:
        got = {m.name: tar.extractfile(m).read() for m in tar}
    assert got["a.txt"].decode() == "Hello there, old friend it works"
    cues = [[0.5, 1.25, "Hello there, old friend"], [2.0, 3.0, "it works"]]
    assert json.loads(got["a.json"])["cues"] == cues
    batch = next(iter(make_dataset(tmp_path / "out", DataConfig(require_text=False))))
    row = batch.keys.index("a")
    lo, hi = batch.text.cu_seqlens[row : row + 2].tolist()
    start = batch.text.t_start[lo:hi]
    assert start[0].item() == pytest.approx(0.5) and start[-1].item() >= 2.0
    assert start[-2:].tolist() == pytest.approx([2 + 2 / 7] * 2)  # "works": 5 of its cue's 7 bytes
    assert bool((start[1:] >= start[:-1]).all()) and bool((batch.text.t_end[lo:hi] <= 3.0 + 1e-6).all())


def test_bad_cues_in_a_json_skip_the_sample_with_the_reason(tmp_path):
    from mmchunk.data.shards import ShardWriter

    wave = np.zeros(8000, np.float32) + 0.01
    soundfile.write(tmp_path / "x.wav", wave, 16_000)
    with ShardWriter(tmp_path / "out", "bad", 4) as writer:
        bad = {"back": [[0.4, 0.1, "x"]], "inf": [[0.0, float("inf"), "x"]], "short": [[0.0, 1.0]]}
        for key, cues in (("good", [[0.0, 0.5, "hi"]]), *bad.items()):
            meta = {"text": "hi", "cues": cues}
            writer.write(key, {"wav": (tmp_path / "x.wav").read_bytes(), "json": json.dumps(meta).encode()})
    batch = next(iter(make_dataset(tmp_path / "out")))
    assert batch.keys == ["good"]
    assert [(s.key, "'cues' item 0" in s.reason) for s in batch.skipped] == [(k, True) for k in bad]
    assert torch.equal(batch.text.t_start, torch.tensor([0.0, 0.0])) and torch.equal(
        batch.text.t_end, torch.tensor([0.5, 0.5])
    )
