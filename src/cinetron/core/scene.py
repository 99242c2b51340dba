"""A prompt read as a scene: its objects, their attributes, the background, the relation.

For a model that declares a ``SceneGrammar`` (the shapes model), ``read_scene`` finds the
vocabulary's phrases in a prompt and assigns them: each mention of the anchor attribute
("circle", "box") is one object, a plural ("two red circles") two alike; the i-th
colour and the i-th motion go to the i-th object, one said once goes to all; a colour
that could be the background's is the background's when a background word ("canvas")
is next to it or when the objects already have theirs. It reads every sentence shape the
captions use, seen in training or not, because it looks at the attribute words only.

What it is for (``plan``): one object in any wording is drawn from the grammar's one
caption (``caption``), so paraphrases and over-long prompts draw as plainly worded ones;
two objects are drawn as two single-object layers and composed (``core/layers.py``).
A prompt it cannot read completely — an attribute missing, two values for one object,
more objects than the grammar allows — is left to the model as written.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

from cinetron.contract.manifest import ModelManifest, SceneGrammar
from cinetron.core.vocabulary import words

NEAR_BACKGROUND_WORD = 2  # words between a colour and "background" that still bind them


@dataclass(frozen=True)
class Mention:
    """A vocabulary phrase at words ``[start, end)``; ``readings``: the (attribute, value)s
    it can name (a value of None: a word of the attribute naming no value, "canvas")."""

    readings: tuple[tuple[str, str | None], ...]
    start: int
    end: int
    plural: bool = False

    def value(self, attribute: str) -> str | None:
        return next((v for a, v in self.readings if a == attribute), None)

    def names(self, attribute: str) -> bool:
        return any(a == attribute and v is not None for a, v in self.readings)


@dataclass(frozen=True)
class SceneObject:
    attributes: dict[str, str]  # every attribute of ``SceneGrammar.objects``


@dataclass(frozen=True)
class Scene:
    background: str
    objects: tuple[SceneObject, ...]
    relation: str | None = None  # of the first object to the second


def _phrases(manifest: ModelManifest) -> dict[tuple[str, ...], list[tuple[str, str | None]]]:
    """Each phrase (as words) → its readings. A phrase every value of an attribute lists
    ("background" under black, white and gray) names the attribute, not a value."""
    found: dict[tuple[str, ...], list[tuple[str, str | None]]] = {}
    for attribute, values in manifest.vocabulary.items():
        counts: dict[tuple[str, ...], list[str]] = {}
        for value, phrases in values.items():
            for phrase in phrases:
                counts.setdefault(tuple(words(phrase)), []).append(value)
        for key, named in counts.items():
            if not key:
                continue
            everywhere = len(set(named)) == len(values) > 1
            readings: list[str | None] = [None] if everywhere else list(dict.fromkeys(named))
            found.setdefault(key, []).extend((attribute, v) for v in readings)
    return found


def mentions(text: str, manifest: ModelManifest) -> list[Mention]:
    """The vocabulary's phrases in ``text``, left to right, longest first, not overlapping."""
    table = _phrases(manifest)
    grammar = manifest.scene
    plurals = {p for ps in (grammar.plurals.values() if grammar else []) for p in ps}
    longest = max((len(p) for p in table), default=0)
    ws = words(text)
    out: list[Mention] = []
    i = 0
    while i < len(ws):
        for n in range(min(longest, len(ws) - i), 0, -1):
            phrase = tuple(ws[i : i + n])
            if phrase in table:
                plural = " ".join(phrase) in plurals
                out.append(Mention(tuple(table[phrase]), i, i + n, plural))
                i += n
                break
        else:
            i += 1
    return out


def _background(found: list[Mention], grammar: SceneGrammar) -> int | None:
    """Index in ``found`` of the mention that names the background, if any."""
    bg = grammar.background
    candidates = [i for i, m in enumerate(found) if m.names(bg)]
    if not candidates:
        return None
    only = [i for i in candidates if all(a == bg for a, _ in found[i].readings)]
    if only:
        return only[-1]
    nouns = [m for m in found if m.value(bg) is None and any(a == bg for a, _ in m.readings)]

    def near_noun(i: int) -> bool:
        m = found[i]
        return any(
            0 <= n.start - m.end <= NEAR_BACKGROUND_WORD or 0 <= m.start - n.end <= 3 for n in nouns
        )

    beside = [i for i in candidates if near_noun(i)]
    if beside:
        return beside[-1]
    last = candidates[-1]
    also = {a for a, _ in found[last].readings if a != bg}  # what else it could name
    if any(m.names(a) for i, m in enumerate(found) if i != last for a in also):
        return last  # the objects have theirs already ("a red circle ... on white")
    return None


def read_scene(text: str, manifest: ModelManifest) -> Scene | None:
    """The scene ``text`` describes completely, or None (see the module's docstring)."""
    grammar = manifest.scene
    if grammar is None:
        return None
    found = mentions(text, manifest)
    anchors = [m for m in found if m.names(grammar.anchor)]
    count = sum(2 if m.plural else 1 for m in anchors)
    if not 1 <= count <= grammar.max_objects:
        return None
    others = [a for a in grammar.objects if a != grammar.anchor]
    bg_index = _background(found, grammar)
    if bg_index is None:
        return None
    background = found[bg_index].value(grammar.background)
    rest = [m for i, m in enumerate(found) if i != bg_index]
    per_attribute: dict[str, list[str]] = {grammar.anchor: []}
    for m in anchors:
        named = str(m.value(grammar.anchor))
        per_attribute[grammar.anchor].extend([named] * (2 if m.plural else 1))
    for attribute in others:
        per_attribute[attribute] = [v for m in rest if (v := m.value(attribute)) is not None]
    objects = []
    for k in range(count):
        attributes = {}  # in the grammar's order
        for attribute in grammar.objects:
            values = per_attribute[attribute]
            if len(values) == count:
                attributes[attribute] = values[k]
            elif len(set(values)) == 1:  # said once, for all ("two red circles moving left")
                attributes[attribute] = values[0]
            else:
                return None
        objects.append(SceneObject(attributes))
    relations = [v for m in rest if grammar.relation and (v := m.value(grammar.relation))]
    if len(set(relations)) > 1 or (relations and count < 2):
        return None
    assert background is not None
    return Scene(background, tuple(objects), relations[0] if relations else None)


def object_caption(scene: Scene, index: int, grammar: SceneGrammar) -> str:
    """One object of ``scene`` on its background, in the grammar's caption."""
    attributes = {**scene.objects[index].attributes, grammar.background: scene.background}
    return grammar.caption.format(
        **{a: grammar.words.get(a, {}).get(v, v) for a, v in attributes.items()}
    )


def caption_phrases(text: str, grammar: SceneGrammar) -> list[str] | None:
    """``grammar.phrases`` of a prompt worded exactly as the grammar's caption (what
    ``object_caption`` writes), or None: any other wording, or a grammar without phrases.
    The caption's fields are matched against the words it is filled from, so the
    inverse is exact."""
    if not grammar.phrases or not grammar.caption:
        return None
    pattern = []
    for literal, field, _, _ in string.Formatter().parse(grammar.caption):
        pattern.append(re.escape(literal))
        if field is not None:
            choices = sorted(grammar.words.get(field, {}).values(), key=len, reverse=True)
            pattern.append(f"(?P<{field}>{'|'.join(map(re.escape, choices))})")
    found = re.fullmatch("".join(pattern), text)
    if found is None:
        return None
    return [phrase.format(**found.groupdict()) for phrase in grammar.phrases]
