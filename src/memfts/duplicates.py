"""Likely duplicate entity names: the key under which near-identical names meet.

Agents write the same thing twice under names that differ only by case ("PostgreSQL",
"postgresql"), accents ("Café", "Cafe"), punctuation and spacing ("node.js", "Node JS",
"nodejs", "user_service", "UserService"), or a plural ending ("Project note", "project
notes", "Library", "Libraries"). :func:`name_key` maps all of those to one string, so one
pass over the names finds them. The key is a suggestion for a person to confirm, never a
reason to merge by itself.
"""

from __future__ import annotations

import re
import unicodedata

_LETTERS = str.maketrans(
    {"ı": "i", "æ": "ae", "ø": "o", "œ": "oe", "ß": "ss", "ł": "l", "đ": "d", "ð": "d", "þ": "th"}
)
"""Letters without a Unicode decomposition that people write without their mark."""

_WORD = re.compile(r"[^\W_]+")
"""Runs of letters and digits: punctuation, underscores and spaces all separate words."""

_ASCII_WORD = re.compile(r"[a-z0-9]+")
""":data:`_WORD` for a lower-cased ASCII name (most names): no Unicode work needed."""

_SIBILANT = ("s", "x", "z", "ch", "sh")


def _singular(word: str) -> str:
    """The word without an English plural ending, spelt so that a singular ending in a silent
    e meets its plural: "cases"/"case" -> "cas", "classes"/"class" -> "class"."""
    if len(word) <= 3:
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith("es") and word[:-2].endswith(_SIBILANT):
        return word[:-2]
    if word.endswith("e") and word[:-1].endswith(_SIBILANT):
        return word[:-1]
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def name_key(name: str) -> str:
    """The same string for names that differ only by case, accents, punctuation, spacing or a
    plural ending (of the last word, when it is made of letters)."""
    if name.isascii():  # a third of the time of the general path, on 63k names
        words = _ASCII_WORD.findall(name.lower())
    else:
        text = unicodedata.normalize("NFKD", name.casefold()).translate(_LETTERS)
        words = _WORD.findall("".join(c for c in text if not unicodedata.combining(c)))
    if not words:  # only punctuation: such names meet only their case variants
        return name.casefold()
    joined = "".join(words)  # "Node JS" and "nodejs" meet: spacing is no difference
    return _singular(joined) if words[-1].isalpha() else joined
