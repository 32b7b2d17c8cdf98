"""Spoken HashHop: a task's prompt read aloud by espeak-ng, written as shards for the audio path.

Each line `k = v` is spoken letter by letter ("capital" before an upper-case letter, so a hash stays
recoverable from the audio), "equals" between the hashes, and "end" after the quoted last edge of a
chain, with a pause between lines. The sample's JSON keeps the task and the time each line starts.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import soundfile
import torch
import torchaudio

from mmchunk.atomic import replacing_shards
from mmchunk.data.espeak import Espeak
from mmchunk.data.shards import ShardWriter
from mmchunk.eval.hashhop import HashHopTask

SAMPLE_RATE = 16_000


def spell(hash_: str) -> str:
    """SSML that reads a hash one letter at a time, "capital" before upper-case letters."""
    letters = [
        f"capital <say-as interpret-as='characters'>{c.lower()}</say-as>" if c.isupper()
        else f"<say-as interpret-as='characters'>{c}</say-as>"
        for c in hash_
    ]  # fmt: skip
    return " ".join(letters)


def prompt_ssml(prompt: str, pause_ms: int = 250) -> tuple[str, list[int]]:
    """SSML of a whole prompt and, per line, the 1-based character offset where it starts."""
    text, offsets = "<speak>", []
    for line in prompt.splitlines():
        key, _, value = line.partition(" = ")
        offsets.append(len(text) + 1)
        end = " end" if value.startswith("'") else ""
        text += f"{spell(key)} equals {spell(value.strip(chr(39)))}{end}. <break time='{pause_ms}ms'/> "
    return text + "</speak>", offsets


def render_spoken(
    task: HashHopTask, voice: str = "en-us", rate: int = 175, pitch: int = 50, seed: int = 0
) -> tuple[np.ndarray, list[float]]:
    """The prompt as a 16 kHz float32 waveform `[N]` and the start time (s) of every line."""
    ssml, offsets = prompt_ssml(task.prompt)
    utterance = Espeak.get().speak(ssml, voice, rate, pitch, seed=seed)
    speech = torch.from_numpy(utterance.pcm.astype(np.float64) / 32768.0)
    wave = torchaudio.functional.resample(speech, utterance.sample_rate, SAMPLE_RATE).float().numpy()
    events = sorted((pos, sample / utterance.sample_rate) for pos, _, sample in utterance.words)
    starts = []
    for offset in offsets:
        later = [t for pos, t in events if pos >= offset]
        starts.append(round(later[0], 4) if later else round(len(wave) / SAMPLE_RATE, 4))
    return wave, starts


def write_spoken(
    tasks: Iterable[HashHopTask], out: str | Path, shard_size: int = 16, voice: str = "en-us"
) -> int:
    """Shards `out/hashhop-NNNNNN.tar` of `{key}.flac` (the spoken prompt), `{key}.txt` (the prompt)
    and `{key}.json` (the task, `line_starts`, voice); returns the number of samples."""
    import json

    count = 0
    with replacing_shards(out) as stage, ShardWriter(stage, "hashhop", shard_size) as writer:
        for index, task in enumerate(tasks):
            wave, starts = render_spoken(task, voice=voice, seed=index)
            flac = io.BytesIO()
            soundfile.write(flac, wave, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
            meta = {
                **task.to_json(),
                "line_starts": starts,
                "voice": voice,
                "duration": len(wave) / SAMPLE_RATE,
            }
            writer.write(
                f"task-{index:06d}",
                {"flac": flac.getvalue(), "txt": task.prompt.encode(), "json": json.dumps(meta).encode()},
            )
            count += 1
    return count
