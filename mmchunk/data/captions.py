"""Several captions per clip (Clotho, AudioCaps, LAION-audio): reading them, and the seeded draw of
one caption per clip and epoch that training uses."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator

from mmchunk.data.decode import DecodeError
from mmchunk.data.epochs import EpochSeed


def sample_captions(txt: str | None, meta: dict) -> list[str]:
    """A sample's captions in order: its `.txt` transcript first (when it has one), then the JSON's
    `text` (a string, or a list of strings as in LAION-audio shards) without repeating the `.txt`.

    Blank captions are dropped; a `text` that is neither a string nor a list of strings raises
    `DecodeError` naming the bad item.
    """
    value = meta.get("text")
    if value is None:
        listed = []
    elif isinstance(value, str):
        listed = [value]
    elif isinstance(value, list):
        bad = next((i for i, v in enumerate(value) if not isinstance(v, str)), None)
        if bad is not None:
            raise DecodeError(f"'text' item {bad} is {type(value[bad]).__name__}, not a string")
        listed = value
    else:
        raise DecodeError(f"'text' must be a string or a list of strings, got {type(value).__name__}")
    captions = [txt] if txt else []
    captions += [c.strip() for c in listed if c.strip() and c.strip() != txt]
    return captions


def caption_index(epoch: EpochSeed, key: str, count: int) -> int:
    """Which of a clip's `count` captions epoch `epoch.epoch` trains on, seeded by (seed, epoch, key)."""
    return epoch.rng("caption", key).randrange(count) if count > 1 else 0


def draw_captions(items: Iterable, epoch: EpochSeed) -> Iterator:
    """Loader stage: every `Sample` with several captions trains on one of them this epoch
    (`caption_index`); skip records and single-caption samples pass unchanged."""
    from mmchunk.data.loader import Sample

    for item in items:
        if isinstance(item, Sample) and len(item.captions) > 1:
            pick = caption_index(epoch, item.key, len(item.captions))
            item = dataclasses.replace(item, text=item.captions[pick])
        yield item
