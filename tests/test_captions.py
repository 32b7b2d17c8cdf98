"""Several captions per clip: reading them, the seeded per-epoch draw, and LAION-CLAP retrieval."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import soundfile
import torch

from mmchunk.data import DataConfig, make_dataset
from mmchunk.data.captions import sample_captions
from mmchunk.data.decode import DecodeError
from mmchunk.data.loader import text_ragged
from mmchunk.data.shards import ShardWriter
from mmchunk.evaluation import ValidationAccumulator
from mmchunk.metrics import caption_retrieval_metrics, retrieval_metrics
from mmchunk.model import ChunkFusionModel
from mmchunk.training import validate_batch


def flac(seconds: float, seed: int) -> bytes:
    buf = io.BytesIO()
    wave = 0.1 * np.random.default_rng(seed).standard_normal(int(16_000 * seconds))
    soundfile.write(buf, wave.astype(np.float32), 16_000, format="FLAC")
    return buf.getvalue()


@pytest.fixture(scope="module")
def laion(tmp_path_factory):
    """A LAION-audio style shard: `N.flac` + `N.json` whose `text` lists 1 to 5 captions, no `.txt`."""
    out = tmp_path_factory.mktemp("laion")
    with ShardWriter(out, "laion", 8) as writer:
        for i in range(6):
            captions = [f"clip {i} caption {j}" for j in range(1 + i % 5)]
            meta = {"text": captions, "original_data": {"id": i}}
            writer.write(f"{i:06d}", {"flac": flac(0.5 + 0.1 * i, i), "json": json.dumps(meta).encode()})
    return out


def test_sample_captions_order_and_errors():
    assert sample_captions("a dog", {"text": ["a dog", " a cat ", "", "a cow"]}) == [
        "a dog",
        "a cat",
        "a cow",
    ]
    assert sample_captions(None, {"text": "only one"}) == ["only one"]
    assert sample_captions("plain", {}) == ["plain"]
    assert sample_captions(None, {"text": []}) == []
    with pytest.raises(DecodeError, match="'text' item 1 is int"):
        sample_captions(None, {"text": ["ok", 3]})
    with pytest.raises(DecodeError, match="string or a list of strings, got dict"):
        sample_captions(None, {"text": {"en": "x"}})


def test_laion_shards_are_read_directly(laion):
    batches = list(make_dataset(laion, DataConfig(max_samples=8)))
    (batch,) = batches
    assert batch.keys == [f"{i:06d}" for i in range(6)]
    assert [len(c) for c in batch.captions] == [1, 2, 3, 4, 5, 1]
    texts = [bytes(t.tolist()).decode() for t in batch.text.split()]
    assert texts == [f"clip {i} caption 0" for i in range(6)]  # without the draw: the first caption


def drawn(laion, epoch: int, seed: int = 0) -> list[str]:
    dataset = make_dataset(laion, DataConfig(max_samples=8, draw_caption=True, seed=seed))
    dataset.epoch_seed.epoch = epoch
    (batch,) = list(dataset)
    return [bytes(t.tolist()).decode() for t in batch.text.split()]


def test_training_draws_one_caption_per_epoch_by_seed(laion):
    first = drawn(laion, 0)
    assert drawn(laion, 0) == first  # same (seed, epoch): same captions, so resume stays exact
    epochs = [drawn(laion, e) for e in range(12)]
    for i in range(6):
        seen = {texts[i] for texts in epochs}
        assert seen <= {f"clip {i} caption {j}" for j in range(1 + i % 5)}
        assert (len(seen) > 1) == (i % 5 > 0)  # over 12 epochs every multi-caption clip changes caption
    assert any(drawn(laion, 0, seed=s) != first for s in (1, 2, 3))


def test_single_caption_protocol_is_plain_retrieval():
    g = torch.Generator().manual_seed(0)
    audio, text = torch.randn(7, 5, generator=g), torch.randn(7, 5, generator=g)
    sim = audio @ text.T
    expected = {**retrieval_metrics(sim, "a2t"), **retrieval_metrics(sim.T, "t2a"), "captions_per_clip": 1.0}
    assert caption_retrieval_metrics(audio, text, torch.arange(7)) == pytest.approx(expected)


def test_multi_caption_protocol_by_hand():
    # 2 clips; clip 0 owns captions 0 and 1, clip 1 owns caption 2; similarity = audio @ text.T
    audio = torch.eye(3)[:2]
    text = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.0, 0.0], [0.5, 0.2, 0.0]])
    # sim rows: clip 0 → [0.1, 0.8, 0.5]; clip 1 → [0.9, 0.0, 0.2]
    s = caption_retrieval_metrics(audio, text, torch.tensor([0, 0, 1]))
    # a2t: clip 0's best own caption (0.8) ranks 0; clip 1's caption (0.2) is beaten by 0.9 → rank 1
    assert s["a2t_R@1"] == pytest.approx(0.5) and s["a2t_mAP@10"] == pytest.approx((1 + 1 / 2) / 2)
    # t2a: caption 0 (true clip 0: 0.1 < 0.9) rank 1; caption 1 rank 0; caption 2 (0.2 > 0.5? no) rank 1
    assert s["t2a_R@1"] == pytest.approx(1 / 3) and s["t2a_mAP@10"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    assert s["captions_per_clip"] == pytest.approx(1.5)
    with pytest.raises(ValueError, match="clip 1 has no caption"):
        caption_retrieval_metrics(audio, text, torch.tensor([0, 0, 0]))
    with pytest.raises(ValueError, match="owner must be"):
        caption_retrieval_metrics(audio, text, torch.tensor([0, 2, 1]))


def test_validation_embeds_every_caption(laion):
    torch.manual_seed(0)
    encoders = {"audio": {"depth": 1}, "text": {"depth": 1}}
    model = ChunkFusionModel(dim=32, embed_dim=16, heads=2, backbone={"depth": 1}, encoders=encoders).eval()
    (batch,) = list(make_dataset(laion, DataConfig(max_samples=8, use_video=False)))
    acc = ValidationAccumulator()
    with torch.no_grad():
        validate_batch(model, batch, acc)
        # reference: every caption embedded alone, as a one-sample batch with its clip's duration
        single = []
        for i, captions in enumerate(batch.captions):
            seconds = batch.audio.lengths[i].item() / 16_000
            assert batch.meta[i]["_seconds"] == seconds
            single += [model.embed_text(text_ragged([c], [batch.meta[i]])) for c in captions]
    (text,) = acc.text
    assert text.shape == (16, 16)
    torch.testing.assert_close(text, torch.cat(single), atol=1e-5, rtol=1e-5)
    assert acc.owner[0].tolist() == [i for i, c in enumerate(batch.captions) for _ in c]
    scores = acc.compute()
    assert scores["captions_per_clip"] == pytest.approx(16 / 6)
