"""Sentences of the built-in corpus: phrases over a small real vocabulary, spoken with pauses between."""

from __future__ import annotations

import numpy as np

COLOURS = [
    "red",
    "green",
    "blue",
    "yellow",
    "purple",
    "orange",
    "black",
    "white",
    "pink",
    "brown",
    "grey",
    "silver",
]
SHAPES = ["circle", "square", "triangle", "star", "diamond", "heart", "cube", "ring", "arrow", "cross"]
ACTIONS = ["move", "slide", "jump", "roll", "turn", "drift", "spin", "fall", "climb", "race"]
DIRECTIONS = ["left", "right", "up", "down", "forward", "backward", "around", "away"]
NUMBERS = ["two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"]
PLACES = [
    "garden",
    "kitchen",
    "station",
    "river",
    "market",
    "forest",
    "harbour",
    "library",
    "tower",
    "bridge",
]


def make_sentence(rng: np.random.Generator) -> tuple[list[str], dict[str, str]]:
    """Phrases of one sentence (a pause goes between phrases) and the scene it describes.

    Three templates over the vocabulary give about 35,000 distinct sentences.
    """

    def pick(words: list[str]) -> str:
        return words[int(rng.integers(len(words)))]

    colour, shape, action, direction, place = (
        pick(w) for w in (COLOURS, SHAPES, ACTIONS, DIRECTIONS, PLACES)
    )
    template = int(rng.integers(3))
    if template == 0:
        phrases = [f"the {colour} {shape}", f"{action}s {direction}"]
    elif template == 1:
        phrases = [f"{pick(NUMBERS)} {colour} {shape}s", f"{action} {direction}", f"near the {place}"]
    else:
        phrases = [f"near the {place}", f"the {colour} {shape} {action}s {direction}"]
    return phrases, {"colour": colour, "shape": shape, "direction": direction}
