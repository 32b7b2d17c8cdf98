"""Speech synthesis with espeak-ng through ctypes (the library and its data ship in espeakng-loader)."""

from __future__ import annotations

import ctypes
import json
import os
import threading
from dataclasses import dataclass

import numpy as np

AUDIO_OUTPUT_SYNCHRONOUS = 2
EVENT_LIST_TERMINATED, EVENT_WORD, EVENT_PHONEME = 0, 1, 7
INITIALIZE_PHONEME_EVENTS = 0x0001  # espeak_Initialize option: report phonemes too (the audio is the same)
PARAM_RATE, PARAM_PITCH = 1, 3
CHARS_UTF8, SSML = 1, 0x10


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    """espeak_EVENT from speak_lib.h."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


@dataclass
class Utterance:
    """espeak's output: int16 PCM `[N]` at `sample_rate`, one (text offset, length, sample) per word
    and one (phoneme mnemonic, text offset, sample) per phoneme, pauses included (mnemonics starting
    with `_`)."""

    pcm: np.ndarray
    sample_rate: int
    words: list[tuple[int, int, int]]
    phonemes: list[tuple[str, int, int]]


class Espeak:
    """One process's espeak-ng engine (the C library keeps process-wide state, so calls are serialised).

    `Espeak.get()` loads and initialises the library once per process. espeak-ng's output drifts by a
    few samples with everything synthesized before in the same process, so `speak` synthesizes in a
    forked child of the still-untouched engine: the same request gives the same samples every time.
    """

    _instance: Espeak | None = None
    _lock = threading.Lock()
    _engine_lock = threading.Lock()

    def __init__(self) -> None:
        import espeakng_loader

        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self._lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self._lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self._lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self._lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        self._lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
            ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip
        data = espeakng_loader.get_data_path().encode()
        options = INITIALIZE_PHONEME_EVENTS
        self.sample_rate = self._lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, data, options)
        if self.sample_rate <= 0:
            raise RuntimeError(f"espeak-ng failed to initialise with data at {data.decode()}")
        self._chunks: list[np.ndarray] = []
        self._words: list[tuple[int, int, int]] = []
        self._phonemes: list[tuple[str, int, int]] = []
        self._callback = _CALLBACK(self._on_audio)
        self._lib.espeak_SetSynthCallback(self._callback)

    @classmethod
    def get(cls) -> Espeak:
        """The process's engine, created on first use."""
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def _on_audio(self, wav, count: int, events) -> int:
        if count > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        i = 0
        while events[i].type != EVENT_LIST_TERMINATED:
            if events[i].type == EVENT_WORD:
                self._words.append((events[i].text_position, events[i].length, events[i].sample))
            elif events[i].type == EVENT_PHONEME:
                name = events[i].id.string.split(b"\0")[0].decode("ascii", errors="replace")
                self._phonemes.append((name, events[i].text_position, events[i].sample))
            i += 1
        return 0

    def speak(self, ssml: str, voice: str, rate: int, pitch: int, seed: int = 0) -> Utterance:
        """Synthesize SSML text with a voice name (e.g. "en-us+f3"), rate in words/min, pitch 0–99.

        `seed` seeds espeak's own noise generator (breathy voice variants use it).
        Word text offsets are 1-based character positions in `ssml`, as espeak reports them.
        Runs in a forked child where the OS can fork (deterministic), in this process otherwise.
        """
        if not hasattr(os, "fork"):
            return self._speak_here(ssml, voice, rate, pitch, seed)
        with self._lock:
            read_end, write_end = os.pipe()
            pid = os.fork()
            if pid == 0:  # child: synthesize, send, exit without running any of the parent's cleanup
                os.close(read_end)
                try:
                    message = b"ok\n" + _encode(self._speak_here(ssml, voice, rate, pitch, seed))
                except Exception as exc:  # handed to the parent, which raises it
                    message = b"error\n" + f"{type(exc).__name__}: {exc}".encode()
                with os.fdopen(write_end, "wb") as out:
                    out.write(message)
                os._exit(0)
            os.close(write_end)
            with os.fdopen(read_end, "rb") as source:
                payload = source.read()
            os.waitpid(pid, 0)
        status, _, body = payload.partition(b"\n")
        if status != b"ok":
            raise RuntimeError(f"espeak-ng failed: {body.decode(errors='replace') or 'no output'}")
        return _decode(body)

    def _speak_here(self, ssml: str, voice: str, rate: int, pitch: int, seed: int) -> Utterance:
        with self._engine_lock:
            if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise ValueError(f"espeak-ng has no voice {voice!r}")
            self._lib.espeak_SetParameter(PARAM_RATE, rate, 0)
            self._lib.espeak_SetParameter(PARAM_PITCH, pitch, 0)
            self._lib.espeak_ng_SetRandSeed(seed)
            self._chunks, self._words, self._phonemes = [], [], []
            text = ssml.encode() + b"\0"
            if self._lib.espeak_Synth(text, len(text), 0, 0, 0, CHARS_UTF8 | SSML, None, None) != 0:
                raise RuntimeError(f"espeak-ng could not synthesize {ssml!r}")
            pcm = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
            return Utterance(pcm, self.sample_rate, list(self._words), list(self._phonemes))


def _encode(utterance: Utterance) -> bytes:
    """Utterance → one JSON header line + raw int16 samples (the child-to-parent message)."""
    header = {"rate": utterance.sample_rate, "words": utterance.words, "phonemes": utterance.phonemes}
    header = json.dumps(header).encode()
    return header + b"\n" + utterance.pcm.astype(np.int16).tobytes()


def _decode(payload: bytes) -> Utterance:
    header, _, pcm = payload.partition(b"\n")
    meta = json.loads(header)
    words = [tuple(w) for w in meta["words"]]
    phonemes = [tuple(p) for p in meta["phonemes"]]
    return Utterance(np.frombuffer(pcm, dtype=np.int16).copy(), meta["rate"], words, phonemes)
