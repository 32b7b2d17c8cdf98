"""Speech synthesis with espeak-ng through ctypes (the library and its data ship in espeakng-loader)."""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass

import numpy as np

AUDIO_OUTPUT_SYNCHRONOUS = 2
EVENT_LIST_TERMINATED, EVENT_WORD = 0, 1
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
    """espeak's output: int16 PCM `[N]` at `sample_rate` and one (text offset, length, sample) per word."""

    pcm: np.ndarray
    sample_rate: int
    words: list[tuple[int, int, int]]


class Espeak:
    """One process's espeak-ng engine (the C library keeps process-wide state, so calls are serialised).

    `Espeak.get()` loads and initialises the library once per process.
    """

    _instance: Espeak | None = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        import espeakng_loader

        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self._lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self._lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self._lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self._lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
            ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip
        data = espeakng_loader.get_data_path().encode()
        self.sample_rate = self._lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, data, 0)
        if self.sample_rate <= 0:
            raise RuntimeError(f"espeak-ng failed to initialise with data at {data.decode()}")
        self._chunks: list[np.ndarray] = []
        self._words: list[tuple[int, int, int]] = []
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
            i += 1
        return 0

    def speak(self, ssml: str, voice: str, rate: int, pitch: int) -> Utterance:
        """Synthesize SSML text with a voice name (e.g. "en-us+f3"), rate in words/min, pitch 0–99.

        Word text offsets are 1-based character positions in `ssml`, as espeak reports them.
        """
        with self._lock:
            if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise ValueError(f"espeak-ng has no voice {voice!r}")
            self._lib.espeak_SetParameter(PARAM_RATE, rate, 0)
            self._lib.espeak_SetParameter(PARAM_PITCH, pitch, 0)
            self._chunks, self._words = [], []
            text = ssml.encode() + b"\0"
            if self._lib.espeak_Synth(text, len(text), 0, 0, 0, CHARS_UTF8 | SSML, None, None) != 0:
                raise RuntimeError(f"espeak-ng could not synthesize {ssml!r}")
            pcm = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
            return Utterance(pcm, self.sample_rate, list(self._words))
