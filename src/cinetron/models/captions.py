"""Captions for the shapes world: many templates and synonyms, so the model learns language.

Some templates and the held-out attribute combinations are reserved for evaluation
(``EVAL_TEMPLATES``, ``EVAL_PAIR_TEMPLATES``, ``HELD_OUT_TRIPLES``): training never sees
them. Two-object captions name each object with its own motion and, in some, where the
first is relative to the second at the first frame (``world.RELATIONS``).
"""

from __future__ import annotations

import numpy as np

from cinetron.contract.manifest import SceneGrammar
from cinetron.models.world import COLORS, MOTIONS, RELATIONS, SHAPES, all_combinations

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
    # v2: more word orders, clauses and relative phrasing.
    "there's a {c} {s} here, {m}, and the {n} is {b}",
    "{m}, a {c} {s} crosses a {b} {n}",
    "i want a {c} {s} that {v}, {b} {n} please",
    "a {b} {n} behind a {c} {s} that is {m}",
    "the {s} is {c} and it {v}; {b} {n}",
    "{c}, {s}, {m}, {b}",
    "make a video where a {c} {s} {v} over a {b} {n}",
    "a {s} coloured {c} {m} on {b}",
    "a {c} {s} can be seen {m} on a {b} {n}",
    "against a {b} {n}, a {j} {c} {s}",
    "a {c} {s} {m} slowly on a {b} {n}",
    "generate: {b} {n}, {c} {s}, {m}",
    "a {b} {n} and one {c} {s}, which {v}",
    "{c} {s}. {m}. {b} {n}.",
    "just a {c} {s} that {v}, nothing else, on a {b} {n}",
    "the only thing on the {b} {n} is a {c} {s}, and it {v}",
    "we see a {c} {s}; it {v}; the {n} is {b}",
    "picture a {c} {s} {m} with a {b} {n}",
]
# Paraphrase shapes the model never trains on: the evaluator's language-robustness set.
EVAL_TEMPLATES = [
    "in this clip a {c} {s} keeps {m} while the {n} stays {b}",
    "imagine a {b} {n}; a {c} {s} {v} there",
    "please generate a {c} {s} {m}, with a {b} {n} behind it",
    "a lone {c} {s} {m} atop a {b} {n}",
    "camera fixed on a {b} {n} as a {c} {s} {v}",
    "here a {c} {s} {v} on {b}",
    "nothing but a {b} {n} and a {c} {s}, which keeps {m}",
    "what moves is a {c} {s}: it {v}, over a {b} {n}",
    "a {b} {n} is all there is, apart from a {j} {c} {s}",
]

# Two objects. {A}/{B}: an object with its motion ("a red circle moving up"); {a}/{b2}:
# the bare object ("a red circle"); {va}/{vb}: their verb phrases; {r}: the relation of
# the first to the second; {p}: plural shape, for two identical objects ({c}, {m}).
PAIR_TEMPLATES = [
    "{A} and {B} on a {b} {n}",
    "on a {b} {n}, {A} and {B}",
    "{A}, {B}, {b} {n}",
    "{b} {n}: {A}; {B}",
    "{A} next to {B}, on {b}",
    "{a} that {va} and {b2} that {vb}, {b} {n}",
]
PAIR_RELATION_TEMPLATES = [
    "{a} {r} {b2} on a {b} {n}; the first {va}, the second {vb}",
    "{A} {r} {B}, {b} {n}",
    "on a {b} {n}, {a} {r} {b2}: the first {va} and the second {vb}",
    "{a} is {r} {b2}; the first {va} and the second {vb}; {b} {n}",
]
TWIN_TEMPLATES = [
    "two {c} {p} {m} on a {b} {n}",
    "a pair of {c} {p} {m}, {b} {n}",
    "on a {b} {n}, two {c} {p} {m}",
]
EVAL_PAIR_TEMPLATES = [
    "imagine a {b} {n} with {A} and also {B}",
    "{a} sits {r} {b2} at first on {b}; then the first {va} and the second {vb}",
]
RELATION_WORDS: dict[str, list[str]] = {
    "left of": ["to the left of", "left of", "on the left of"],
    "right of": ["to the right of", "right of", "on the right of"],
    "above": ["above", "on top of", "higher than"],
    "below": ["below", "under", "beneath", "underneath", "lower than"],
}
SHAPE_PLURALS: dict[str, list[str]] = {
    "circle": ["circles", "balls", "discs", "dots"],
    "square": ["squares", "boxes", "blocks", "tiles"],
    "triangle": ["triangles", "pyramids", "wedges"],
}

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


def train_triples() -> list[tuple[str, str, str]]:
    """(colour, shape, motion) of objects training shows, alone or in pairs."""
    return [t for t in _triples() if t not in HELD_OUT_TRIPLES]


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


Triple = tuple[str, str, str]  # (colour, shape, motion) of one object


def _words_of(rng: np.random.Generator, triple: Triple) -> dict[str, str]:
    color, shape, motion = triple
    c, s = _pick(rng, COLOR_WORDS[color]), _pick(rng, SHAPE_WORDS[shape])
    bare = f"{'an' if c[0] in 'aeiou' else 'a'} {c} {s}"
    return {
        "A": f"{bare} {_pick(rng, MOTION_ING[motion])}",
        "a": bare,
        "v": _pick(rng, MOTION_VERB[motion]),
    }


def pair_caption(
    rng: np.random.Generator,
    background: str,
    first: Triple,
    second: Triple,
    relation: str | None = None,
    *,
    held_out: bool = False,
) -> str:
    """A caption of two objects; ``relation`` (first relative to second) is said when given.
    Two identical objects without a relation may be called "two red circles"; ``held_out``
    draws from the sentence shapes training never sees."""
    if held_out:
        templates = [t for t in EVAL_PAIR_TEMPLATES if ("{r}" in t) == (relation is not None)]
    elif relation is not None:
        templates = PAIR_RELATION_TEMPLATES
    elif first == second and rng.random() < 0.7:
        templates = TWIN_TEMPLATES
    else:
        templates = PAIR_TEMPLATES
    one, two = _words_of(rng, first), _words_of(rng, second)
    text = _pick(rng, templates).format(
        A=one["A"],
        B=two["A"],
        a=one["a"],
        b2=two["a"],
        va=one["v"],
        vb=two["v"],
        r=_pick(rng, RELATION_WORDS[relation]) if relation else "",
        c=_pick(rng, COLOR_WORDS[first[0]]),
        p=_pick(rng, SHAPE_PLURALS[first[1]]),
        m=_pick(rng, MOTION_ING[first[2]]),
        b=_pick(rng, BACKGROUND_WORDS[background]),
        n=_pick(rng, BACKGROUND_NOUNS),
    )
    return text[0].upper() + text[1:] if rng.random() < 0.3 else text


def canonical_caption(attributes: tuple[str, str, str, str]) -> str:
    """The plainest wording, used by the demo and in docs."""
    background, color, shape, motion = attributes
    return f"a {color} {shape} {MOTION_ING[motion][0]} on a {background} background"


# ``canonical_caption`` in the parts a model trained with ``--caption-phrases`` reads each
# on its own (``SceneGrammar.phrases``; model.json's ``caption_phrases``).
CAPTION_PHRASES = ("{color}", "{shape}", "{motion}", "{background} background")


def scene_grammar(phrases: tuple[str, ...] = ()) -> SceneGrammar:
    """How prompts of this world read as scenes (``ModelManifest.scene``): objects are
    named by their shape, drawn one at a time from ``canonical_caption``'s wording, encoded
    in ``phrases`` when the weights were trained so."""
    return SceneGrammar(
        objects=("color", "shape", "motion"),
        anchor="shape",
        background="background",
        relation="relation",
        caption="a {color} {shape} {motion} on a {background} background",
        words={
            "color": {c: c for c in COLOR_WORDS},
            "shape": {s: s for s in SHAPE_WORDS},
            "motion": {m: MOTION_ING[m][0] for m in MOTION_ING},
            "background": {b: b for b in BACKGROUND_WORDS},
        },
        plurals={s: list(p) for s, p in SHAPE_PLURALS.items()},
        max_objects=2,
        wraps=True,
        phrases=phrases,
    )


# Plain phrases no caption uses but people write: the scene reader knows them (a prompt is
# drawn from the plainest caption of what it reads), so the model follows them too.
MOTION_READ: dict[str, list[str]] = {
    "left": ["moving left", "going left", "leftward", "leftwards", "to the left"],
    "right": ["moving right", "going right", "rightward", "rightwards", "to the right"],
    "up": ["upward", "upwards", "goes up"],
    "down": ["downward", "downwards", "goes down"],
    "still": ["still", "motionless", "not moving"],
    "grows": ["bigger", "larger"],
    "shrinks": ["smaller"],
}


def vocabulary() -> dict[str, dict[str, list[str]]]:
    """Every phrase the captions use for each attribute value, and the plain ones of
    ``MOTION_READ`` (``ModelManifest.vocabulary``)."""
    motions = {
        m: sorted({*MOTION_ING[m], *MOTION_VERB[m], *MOTION_ADJ[m], *MOTION_READ[m]})
        for m in MOTION_ING
    }
    backgrounds = {b: [*words, *BACKGROUND_NOUNS] for b, words in BACKGROUND_WORDS.items()}
    return {
        "shape": {s: [*SHAPE_WORDS[s], *SHAPE_PLURALS[s]] for s in SHAPE_WORDS},
        "color": {c: list(w) for c, w in COLOR_WORDS.items()},
        "motion": motions,
        "background": backgrounds,
        "relation": {r: list(RELATION_WORDS[r]) for r in RELATIONS},
    }


# Words of plain English that name no attribute, beyond the templates' own.
COMMON_FILLER = (
    "a an the and or of on in at to with its it is are this that there here please make "
    "create generate show me video clip animation footage scene shape object one single "
    "while as over behind against across front atop lone simple short plain not does "
    "two pair both first second then also each other"
)


def filler_words() -> list[str]:
    """Words of the caption templates (placeholders aside) and common function words:
    they describe no attribute, so a prompt may use them freely."""
    import re

    templates = [
        *TRAIN_TEMPLATES,
        *EVAL_TEMPLATES,
        *PAIR_TEMPLATES,
        *PAIR_RELATION_TEMPLATES,
        *TWIN_TEMPLATES,
        *EVAL_PAIR_TEMPLATES,
    ]
    text = re.sub(r"\{[a-z0-9]+\}", " ", " ".join([*templates, COMMON_FILLER]))
    return sorted({w for w in re.findall(r"[a-z]+", text.lower())})
