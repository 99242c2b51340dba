"""What a prompt says in the model's own words: the words it knows, the ones it does not.

For a model with a declared vocabulary (``ModelManifest.vocabulary``: the shapes model),
a prompt with no word the model knows would still make *some* video — a blob — so it is
refused with what the model can draw; a prompt it understands in part makes its video
with a warning naming the words it ignored. Models without a vocabulary are not checked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cinetron.contract.manifest import ModelManifest
from cinetron.core.errors import InvalidArgument

WORD = re.compile(r"[^\W\d_]+(?:['-][^\W\d_]+)*")  # letters in any script, with ' and -


def words(text: str) -> list[str]:
    """The lowercase words of ``text``; numbers, punctuation and symbols are not words."""
    return [w.lower() for w in WORD.findall(text)]


@dataclass(frozen=True)
class Reading:
    known: tuple[str, ...]  # words that name an attribute
    unknown: tuple[str, ...]  # words the model never learned (filler excluded)


def read(text: str, manifest: ModelManifest) -> Reading:
    attribute_words = {
        w for values in manifest.vocabulary.values() for ps in values.values() for p in ps
        for w in words(p)
    }  # fmt: skip
    filler = {w for p in manifest.filler_words for w in words(p)}
    attribute_words -= filler  # "moving to the left": "the" names nothing
    found = words(text)
    known = tuple(dict.fromkeys(w for w in found if w in attribute_words))
    unknown = tuple(dict.fromkeys(w for w in found if w not in attribute_words | filler))
    return Reading(known, unknown)


def what_it_draws(manifest: ModelManifest) -> str:
    """One line of the vocabulary's values: 'shape: circle, square, …; color: red, …'."""
    return "; ".join(f"{name}: {', '.join(values)}" for name, values in manifest.vocabulary.items())


def _quote(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


def check_prompt(field: str, text: str, manifest: ModelManifest) -> str | None:
    """Refuse ``text`` when the model knows none of its words; a warning when it knows some
    of them only; None when the model has no vocabulary or knows every word."""
    if not manifest.vocabulary:
        return None
    reading = read(text, manifest)
    draws = what_it_draws(manifest)
    if not reading.known:
        raise InvalidArgument(
            field,
            f"the {manifest.family!r} model knows none of the words in {_quote(text)}, so it "
            f"cannot follow it; it draws what these words describe — {draws}",
        )
    if reading.unknown:
        return (
            f"{field}: the {manifest.family!r} model does not know "
            f"{', '.join(repr(w) for w in reading.unknown)} and ignored "
            f"{'it' if len(reading.unknown) == 1 else 'them'}; it knows {draws}"
        )
    return None
