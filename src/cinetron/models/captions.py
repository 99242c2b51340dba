"""Captions for the shapes world: many templates and synonyms, so the model learns language.

Some templates and the held-out attribute combinations are reserved for evaluation
(``EVAL_TEMPLATES``, ``HELD_OUT_COMBINATIONS``): training never sees them.
"""

from __future__ import annotations

import numpy as np

from cinetron.models.world import COLORS, MOTIONS, SHAPES, all_combinations

SHAPE_WORDS: dict[str, list[str]] = {
    "circle": ["circle", "ball", "disc", "disk", "dot", "round shape", "orb", "round blob"],
    "square": ["square", "box", "block", "tile", "square shape", "cube", "quadrilateral"],
    "triangle": ["triangle", "pyramid", "wedge", "triangular shape", "arrowhead", "delta"],
}
COLOR_WORDS: dict[str, list[str]] = {
    "red": ["red", "crimson", "scarlet", "cherry red", "ruby"],
    "green": ["green", "emerald", "grass green", "leafy green"],
    "blue": ["blue", "cobalt", "royal blue", "azure", "sapphire"],
    "yellow": ["yellow", "lemon", "golden", "canary yellow", "sunny yellow"],
    "purple": ["purple", "violet", "plum", "lavender", "amethyst"],
    "orange": ["orange", "tangerine", "amber", "pumpkin orange"],
    "cyan": ["cyan", "turquoise", "aqua", "teal", "sky cyan"],
    "white": ["white", "snow white", "ivory", "milky white", "pale white"],
}
BACKGROUND_WORDS: dict[str, list[str]] = {
    "black": ["black", "dark", "pitch black", "jet black", "night-dark"],
    "white": ["white", "bright white", "blank white", "snowy", "paper white"],
    "gray": ["gray", "grey", "ash gray", "slate", "neutral gray"],
}
BACKGROUND_NOUNS = ["background", "backdrop", "canvas", "scene", "field", "surface"]

# Per motion: a participle phrase ("moving to the left") and a finite verb phrase.
MOTION_ING: dict[str, list[str]] = {
    "left": [
        "moving to the left",
        "rolling left",
        "drifting leftward",
        "sliding to the left",
        "heading left",
        "travelling left",
        "gliding to the left",
    ],
    "right": [
        "moving to the right",
        "rolling right",
        "drifting rightward",
        "sliding to the right",
        "heading right",
        "travelling right",
        "gliding to the right",
    ],
    "up": [
        "moving up",
        "rising",
        "floating upward",
        "climbing",
        "drifting upwards",
        "going up",
        "ascending",
    ],
    "down": [
        "moving down",
        "falling",
        "sinking",
        "dropping",
        "drifting downwards",
        "going down",
        "descending",
    ],
    "still": [
        "staying still",
        "not moving",
        "sitting still",
        "resting in place",
        "standing still",
        "holding its position",
        "remaining motionless",
    ],
    "grows": [
        "growing",
        "getting bigger",
        "expanding",
        "swelling",
        "growing larger",
        "inflating",
        "increasing in size",
    ],
    "shrinks": [
        "shrinking",
        "getting smaller",
        "contracting",
        "dwindling",
        "shrinking down",
        "deflating",
        "decreasing in size",
    ],
}
MOTION_VERB: dict[str, list[str]] = {
    "left": [
        "moves to the left",
        "rolls left",
        "drifts leftward",
        "slides to the left",
        "travels left",
        "glides left",
    ],
    "right": [
        "moves to the right",
        "rolls right",
        "drifts rightward",
        "slides to the right",
        "travels right",
        "glides right",
    ],
    "up": ["moves up", "rises", "floats upward", "climbs", "drifts upwards", "ascends"],
    "down": ["moves down", "falls", "sinks", "drops", "drifts downwards", "descends"],
    "still": [
        "stays still",
        "does not move",
        "sits still",
        "rests in place",
        "stays motionless",
        "holds its position",
    ],
    "grows": ["grows", "gets bigger", "expands", "swells", "grows larger", "inflates"],
    "shrinks": ["shrinks", "gets smaller", "contracts", "dwindles", "deflates", "shrinks down"],
}
MOTION_ADJ: dict[str, list[str]] = {
    "left": ["leftward-moving", "left-drifting"],
    "right": ["rightward-moving", "right-drifting"],
    "up": ["rising", "upward-moving"],
    "down": ["falling", "downward-moving"],
    "still": ["motionless", "stationary", "static"],
    "grows": ["growing", "expanding"],
    "shrinks": ["shrinking", "contracting"],
}

# {c} colour, {s} shape, {m} participle, {v} verb phrase, {j} motion adjective,
# {b} background colour, {n} background noun.
TRAIN_TEMPLATES = [
    "a {c} {s} {m} on a {b} {n}",
    "{c} {s} {m}, {b} {n}",
    "a {c} {s} {v} across a {b} {n}",
    "a {c} {s} that {v} on a {b} {n}",
    "{j} {c} {s}, {b} {n}",
    "a {j} {c} {s} on a {b} {n}",
    "on a {b} {n}, a {c} {s} {v}",
    "on a {b} {n} a {c} {s} is {m}",
    "the {c} {s} {v}. {b} {n}",
    "video of a {c} {s} {m} against a {b} {n}",
    "a clip showing a {c} {s} {m} on a {b} {n}",
    "{b} {n} with a {c} {s} {m}",
    "a {b} {n} where a {c} {s} {v}",
    "there is a {c} {s} {m} in front of a {b} {n}",
    "animation: {c} {s}, {m}, {b} {n}",
    "{c} {s} on {b} {n}, {m}",
    "a single {c} {s} {m} over a plain {b} {n}",
    "one {c} {s} {v} on a {b} {n}",
    "simple animation of a {c} {s} {m}; the {n} is {b}",
    "the {n} is {b} and a {c} {s} {v}",
    "a {c} colored {s} {m} on a {b} {n}",
    "a {s}, {c}, {m}, on a {b} {n}",
    "watch a {c} {s} {m} on a {b} {n}",
    "footage of a {j} {c} {s} against {b}",
    "a {c} {s} {m} in a {b} {n}",
    "{c} {s} {v} in front of {b}",
    "a {b} {n}. a {c} {s} {v}.",
    "show me a {c} {s} {m} on a {b} {n}",
    "render a {j} {c} {s} on a {b} {n}",
    "a short video: {c} {s} {m} on {b}",
    "{j} {s} in {c} on a {b} {n}",
    "a {c} {s}, {j}, {b} {n}",
]
# Paraphrase shapes the model never trains on: the evaluator's language-robustness set.
EVAL_TEMPLATES = [
    "in this clip a {c} {s} keeps {m} while the {n} stays {b}",
    "imagine a {b} {n}; a {c} {s} {v} there",
    "please generate a {c} {s} {m}, with a {b} {n} behind it",
    "a lone {c} {s} {m} atop a {b} {n}",
    "camera fixed on a {b} {n} as a {c} {s} {v}",
    "here a {c} {s} {v} on {b}",
]

HELD_OUT_COUNT = 16


def _triples() -> list[tuple[str, str, str]]:
    return [(c, s, m) for c in COLORS for s in SHAPES for m in MOTIONS]


def _held_out_triples() -> set[tuple[str, str, str]]:
    """(colour, shape, motion) triples never shown in training, with any background.

    Fixed by a seed so the split is the same everywhere; chosen so that each colour,
    shape and motion value still appears in training many times.
    """
    triples = _triples()
    order = np.random.default_rng(20261125).permutation(len(triples))
    return {triples[i] for i in order[:HELD_OUT_COUNT]}


HELD_OUT_TRIPLES = _held_out_triples()


def is_held_out(attributes: tuple[str, str, str, str]) -> bool:
    _, color, shape, motion = attributes
    return (color, shape, motion) in HELD_OUT_TRIPLES


def train_combinations() -> list[tuple[str, str, str, str]]:
    return [a for a in all_combinations() if not is_held_out(a)]


def held_out_combinations() -> list[tuple[str, str, str, str]]:
    return [a for a in all_combinations() if is_held_out(a)]


def _pick(rng: np.random.Generator, words: list[str]) -> str:
    return words[int(rng.integers(len(words)))]


def caption(
    rng: np.random.Generator,
    attributes: tuple[str, str, str, str],
    templates: list[str] = TRAIN_TEMPLATES,
) -> str:
    background, color, shape, motion = attributes
    template = _pick(rng, templates)
    text = template.format(
        c=_pick(rng, COLOR_WORDS[color]),
        s=_pick(rng, SHAPE_WORDS[shape]),
        m=_pick(rng, MOTION_ING[motion]),
        v=_pick(rng, MOTION_VERB[motion]),
        j=_pick(rng, MOTION_ADJ[motion]),
        b=_pick(rng, BACKGROUND_WORDS[background]),
        n=_pick(rng, BACKGROUND_NOUNS),
    )
    return text[0].upper() + text[1:] if rng.random() < 0.3 else text


def canonical_caption(attributes: tuple[str, str, str, str]) -> str:
    """The plainest wording, used by the demo and in docs."""
    background, color, shape, motion = attributes
    return f"a {color} {shape} {MOTION_ING[motion][0]} on a {background} background"


def vocabulary() -> dict[str, dict[str, list[str]]]:
    """Every phrase the captions use for each attribute value (``ModelManifest.vocabulary``)."""
    motions = {m: sorted({*MOTION_ING[m], *MOTION_VERB[m], *MOTION_ADJ[m]}) for m in MOTION_ING}
    backgrounds = {b: [*words, *BACKGROUND_NOUNS] for b, words in BACKGROUND_WORDS.items()}
    return {
        "shape": {s: list(w) for s, w in SHAPE_WORDS.items()},
        "color": {c: list(w) for c, w in COLOR_WORDS.items()},
        "motion": motions,
        "background": backgrounds,
    }


# Words of plain English that name no attribute, beyond the templates' own.
COMMON_FILLER = (
    "a an the and or of on in at to with its it is are this that there here please make "
    "create generate show me video clip animation footage scene shape object one single "
    "while as over behind against across front atop lone simple short plain not does"
)


def filler_words() -> list[str]:
    """Words of the caption templates (placeholders aside) and common function words:
    they describe no attribute, so a prompt may use them freely."""
    import re

    text = " ".join([*TRAIN_TEMPLATES, *EVAL_TEMPLATES, COMMON_FILLER])
    text = re.sub(r"\{[a-z]\}", " ", text)
    return sorted({w for w in re.findall(r"[a-z]+", text.lower())})
