"""Words as DataTrove splits English text by default (spaCy's blank English tokenizer), without spaCy.

DataTrove's `split_into_words(text, "en")` runs `spacy.blank("en")`'s tokenizer and keeps the non-blank
tokens. spaCy splits the text on white space (`str.isspace`) and tokenizes each white-space-free chunk on
its own, so a chunk's tokens never depend on its neighbours. `SpacyEnglishWords.chunk` re-implements that
per-chunk algorithm (spaCy 3.x `Tokenizer._split_affixes` / `_attach_tokens` / `_apply_special_cases`):
special cases (the English tokenizer exceptions: contractions such as "don't" -> "do", "n't", abbreviations
such as "Mr.", emoticons), then prefixes and suffixes peeled off one at a time, then a URL match or infixes
(hyphens, "/" or ":" between letters, "." between a lower- and an upper-case letter, ellipses, symbols);
finally runs of tokens that spell a special case are merged back ("f(x):" -> "f(x", "):").

Rule tables, prefix / suffix / infix patterns and the URL pattern follow spaCy 3.8 (MIT License,
Copyright (C) 2016-2024 ExplosionAI GmbH, 2016 spaCy GmbH, 2015 Matthew Honnibal). Differences: spaCy's
letter classes are explicit code-point lists; here letters are `str.isalpha` (lower / upper case:
`str.islower` / `str.isupper`, plus the letters of scripts without case, as in spaCy), and symbols
(spaCy's "icons") are Unicode category So of the Basic Multilingual Plane plus U+1F000-U+1FAFF (on 221,034
distinct chunks of real text one differs: "ℓ." stays whole in spaCy); the merge pass only looks inside a
chunk (spaCy's also matches token runs across a single space, which can only block a merge).
`tests/stages/test_heuristics_gopher_compat.py` compares this with spaCy on real text.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterator
from functools import cache

_PUNCT = r"… …… , : ; \! \? ¿ ؟ ¡ \( \) \[ \] \{ \} < > _ # \* & 。 ？ ！ ， 、 ； ： ～ · । ، ۔ ؛ ٪"
_QUOTES = r"\' \" ” “ ` ‘ ´ ’ ‚ , „ » « 「 」 『 』 （ ） 〔 〕 【 】 《 》 〈 〉 〈 〉  ⟦ ⟧"
_HYPHENS = "- – — -- --- —— ~"
_CURRENCY = r"\$ £ € ¥ ฿ US\$ C\$ A\$ ₽ ﷼ ₴ ₠ ₡ ₢ ₣ ₤ ₥ ₦ ₧ ₨ ₩ ₪ ₫ € ₭ ₮ ₯ ₰ ₱ ₲ ₳ ₴ ₵ ₶ ₷ ₸ ₹ ₺ ₻ ₼ ₽ ₾ ₿"
_UNITS = ("km km² km³ m m² m³ dm dm² dm³ cm cm² cm³ mm mm² mm³ ha µm nm yd in ft kg g mg µg t lb oz m/s km/h kmh "
          "mph hPa Pa mbar mb MB kb KB gb GB tb TB T G M K % км км² км³ м м² м³ дм дм² дм³ см см² см³ мм мм² мм³ нм "
          "кг г мг м/с км/ч кПа Па мбар Кб КБ кб Мб МБ мб Гб ГБ гб Тб ТБ тбكم كم² كم³ م م² م³ سم سم² سم³ مم مم² مم³ "
          "كم غرام جرام جم كغ ملغ كوب اكواب")
_ELLIPSES = [r"\.\.+", "…"]
_EMOTICONS = (
    r""":) :-) :)) :-)) :))) :-))) (: (-: =) (= :] :-] [: [-: [= =] :o) (o: :} :-} 8) 8-) (-8 ;) ;-) (; (-; :( :-( """
    r""":(( :-(( :((( :-((( ): )-: =( >:( :') :'-) :'( :'-( :/ :-/ =/ =| :| :-| ]= =[ :1 :P :-P :p :-p :O :-O :o :-o """
    r""":0 :-0 :() >:o :* :-* :3 :-3 =3 :> :-> :X :-X :x :-x :D :-D ;D ;-D =D xD XD xDD XDD 8D 8-D ^_^ ^__^ ^___^ """
    r""">.< >.> <.< ._. ;_; -_- -__- v.v V.V v_v V_V o_o o_O O_o O_O 0_o o_0 0_0 o.O O.o O.O o.o 0.0 o.0 0.o @_@ """
    r"""<3 <33 <333 </3 (^_^) (-_-) (._.) (>_<) (*_*) (¬_¬) ಠ_ಠ ಠ︵ಠ (ಠ_ಠ) ¯\(ツ)/¯ (╯°□°）╯︵┻━┻ ><(((*>""")
_ABBREVIATIONS = (
    "'S 's ‘S ‘s and/or w/o 're 'Cause 'cause 'cos 'Cos 'coz 'Coz 'cuz 'Cuz 'bout ma'am Ma'am o'clock O'clock lovin' "
    "Lovin' lovin Lovin havin' Havin' havin Havin doin' Doin' doin Doin goin' Goin' goin Goin Mt. Ak. Ala. Apr. Ariz. "
    "Ark. Aug. Calif. Colo. Conn. Dec. Del. Feb. Fla. Ga. Ia. Id. Ill. Ind. Jan. Jul. Jun. Kan. Kans. Ky. La. Mar. "
    "Mass. Mich. Minn. Miss. N.C. N.D. N.H. N.J. N.M. N.Y. Neb. Nebr. Nev. Nov. Oct. Okla. Ore. Pa. S.C. Sep. Sept. "
    "Tenn. Va. Wash. Wis. 'd a.m. Adm. Bros. co. Co. Corp. D.C. Dr. e.g. E.g. E.G. Gen. Gov. i.e. I.e. I.E. Inc. Jr. "
    "Ltd. Md. Messrs. Mo. Mont. Mr. Mrs. Ms. p.m. Ph.D. Prof. Rep. Rev. Sen. St. vs. v.s. ' \\\") <space> '' C++ "
    "ä. ö. ü. \\t \\n \u2014")
_EXCLUDE = ("Ill", "ill", "Its", "its", "Hell", "hell", "Shell", "shell", "Shed", "shed", "were", "Were", "Well",
            "well", "Whore", "whore")


def _both(*words: str) -> Iterator[str]:
    for word in words:
        yield from (word, word.title())


def _contractions(exc: dict[str, tuple[str, ...]]) -> None:
    """spaCy's generated English contractions (`spacy/lang/en/tokenizer_exceptions.py`)."""
    def add(*parts: str) -> None:
        exc["".join(parts)] = parts

    for o in _both("i"):
        add(o, "'m"), add(o, "m"), add(o, "'m", "a"), add(o, "m", "a")
    pronouns = ("i", "you", "he", "she", "it", "we", "they")
    w_words = ("who", "what", "when", "where", "why", "how", "there", "that", "this", "these", "those")
    for o in _both(*pronouns, *w_words):
        for parts in (("'ll",), ("ll",), ("'ll", "'ve"), ("ll", "ve"), ("'d",), ("d",), ("'d", "'ve"), ("d", "ve")):
            add(o, *parts)
    for o in _both("i", "you", "we", "they", *w_words[:7], "these", "those"):
        add(o, "'ve"), add(o, "ve")
    for o in _both("you", "we", "they", *w_words[:7], "these", "those"):
        add(o, "'re"), add(o, "re")
    for o in _both("he", "she", "it", *w_words[:9]):
        add(o, "'s"), add(o, "s")
    for o in _both("ca", "could", "do", "does", "did", "had", "may", "might", "must", "need", "ought", "sha", "should",
                   "wo", "would"):
        add(o, "n't"), add(o, "nt"), add(o, "n't", "'ve"), add(o, "nt", "ve")
    for o in _both("could", "might", "must", "should", "would"):
        add(o, "'ve"), add(o, "ve")
    for o in _both("ai", "are", "is", "was", "were", "have", "has", "dare"):
        add(o, "n't"), add(o, "nt")
    for o in _both("doin", "goin", "nothin", "nuthin", "ol", "somethin"):
        add(o), add(o + "'")
    for o in ("em", "ll", "nuff"):
        add(o), add("'" + o)
    for h in range(1, 13):
        for period in ("a.m.", "am", "p.m.", "pm"):
            add(str(h), period)
    for parts in (("y'", "all"), ("y", "all"), ("how", "'d", "'y"), ("How", "'d", "'y"), ("not", "'ve"), ("not", "ve"),
                  ("Not", "'ve"), ("Not", "ve"), ("can", "not"), ("Can", "not"), ("gon", "na"), ("Gon", "na"),
                  ("got", "ta"), ("Got", "ta"), ("let", "'s"), ("Let", "'s"), ("c'm", "on"), ("C'm", "on")):
        add(*parts)


@cache
def special_cases() -> dict[str, tuple[str, ...]]:
    """spaCy's English tokenizer exceptions: chunk -> its tokens (curly-apostrophe variants included)."""
    exc: dict[str, tuple[str, ...]] = {}
    _contractions(exc)
    for orth in _ABBREVIATIONS.split(" ") + [f"{c}." for c in "abcdefghijklmnopqrstuvwxyz"] + _EMOTICONS.split():
        exc[orth] = (orth,)
    for unit in "cfkCFK":
        exc[f"°{unit}."] = ("°", unit, ".")
    for orth in _EXCLUDE:
        exc.pop(orth, None)
    exc.update({key.replace("'", "’"): tuple(p.replace("'", "’") for p in parts)
                for key, parts in list(exc.items()) if "'" in key})
    return exc


def _ranges(test: Callable[[str], bool], stop: int = 0x10000) -> str:
    """A regex character-class body of the code points below `stop` that pass `test`."""
    out, start = [], None
    for i in range(stop + 1):
        hit = i < stop and not 0xD800 <= i < 0xE000 and test(chr(i))
        if hit and start is None:
            start = i
        elif not hit and start is not None:
            out.append(re.escape(chr(start)) + ("-" + re.escape(chr(i - 1)) if i - 1 > start else ""))
            start = None
    return "".join(out)


@cache
def _classes() -> dict[str, str]:
    uncased = _ranges(lambda c: c.isalpha() and not c.islower() and not c.isupper())
    return {"a": _ranges(str.isalpha), "al": _ranges(str.islower) + uncased, "au": _ranges(str.isupper) + uncased,
            "i": _ranges(lambda c: unicodedata.category(c) == "So") + "\U0001f000-\U0001faff"}


def _alternatives(words: str) -> list[str]:
    return [w for w in words.split(" ") if w]


@cache
def _patterns() -> tuple[Callable, Callable, Callable, Callable]:
    c = _classes()
    alpha, lower, upper, icons = f"[{c['a']}]", c["al"], c["au"], f"[{c['i']}]"
    quotes = "".join(_alternatives(_QUOTES))
    punct, hyphens = "|".join(_alternatives(_PUNCT)), "|".join(_alternatives(_HYPHENS))
    currency, units = "|".join(_alternatives(_CURRENCY)), "|".join(_alternatives(_UNITS))
    common = _alternatives(_PUNCT) + _ELLIPSES + _alternatives(_QUOTES)
    prefixes = ["§", "%", "=", "—", "–", r"\+(?![0-9])", *common, *_alternatives(_CURRENCY), icons]
    suffixes = [*common, icons, "'s", "'S", "’s", "’S", "—", "–", r"(?<=[0-9])\+", r"(?<=°[FfCcKk])\.",
                rf"(?<=[0-9])(?:{currency})", rf"(?<=[0-9])(?:{units})",
                rf"(?<=[0-9{lower}%²\-\+{punct}(?:{quotes})])\.", rf"(?<=[{upper}][{upper}])\."]
    infixes = [*_ELLIPSES, icons, r"(?<=[0-9])[+\-\*^](?=[0-9-])", rf"(?<=[{lower}{quotes}])\.(?=[{upper}{quotes}])",
               rf"(?<={alpha}),(?={alpha})", rf"(?<=[{c['a']}0-9])(?:{hyphens})(?={alpha})",
               rf"(?<=[{c['a']}0-9])[:<>=/](?={alpha})"]
    url = (r"^(?:(?:[\w\+\-\.]{2,})://)?(?:\S+(?::\S*)?@)?(?:(?!(?:10|127)(?:\.\d{1,3}){3})"
           r"(?!(?:169\.254|192\.168)(?:\.\d{1,3}){2})(?!172\.(?:1[6-9]|2\d|3[0-1])(?:\.\d{1,3}){2})"
           r"(?:[1-9]\d?|1\d\d|2[01]\d|22[0-3])(?:\.(?:1?\d{1,2}|2[0-4]\d|25[0-5])){2}"
           r"(?:\.(?:[1-9]\d?|1\d\d|2[0-4]\d|25[0-4]))|(?:(?:[A-Za-z0-9\u00a1-\uffff][A-Za-z0-9\u00a1-\uffff_-]{0,62})?"
           rf"[A-Za-z0-9\u00a1-\uffff]\.)+(?:[{lower}]{{2,63}}))(?::\d{{2,5}})?(?:[/?#]\S*)?$")
    return (re.compile("|".join("^" + p for p in prefixes)).search,
            re.compile("|".join(p + "$" for p in suffixes)).search,
            re.compile("|".join(infixes)).finditer, re.compile(url).match)


class SpacyEnglishWords:
    """DataTrove's English word splitting (spaCy's blank English tokenizer) without spaCy; the words of up to
    `cache_size` distinct chunks are kept (the cache is emptied when full)."""

    def __init__(self, cache_size: int = 200_000):
        self.prefix_search, self.suffix_search, self.infix_finditer, self.url_match = _patterns()
        self.specials = special_cases()
        self.cache: dict[str, tuple[str, ...]] = {}
        self.cache_size = cache_size
        # spaCy's second pass: special cases that affixes would split, as their affix-split tokens
        self.merges = {self._split(s, {}): s for s in self.specials
                       if self.prefix_search(s) or self._suffix_length(s) or next(self.infix_finditer(s), None)}
        self.merges = {parts: s for parts, s in self.merges.items() if len(parts) > 1}
        self.merge_length = max(map(len, self.merges), default=0)

    def __call__(self, text: str) -> list[str]:
        """The words of a text, as `datatrove.utils.text.split_into_words(text, "en")` returns them."""
        return [word for chunk in text.split() for word in self.chunk(chunk)]

    def chunk(self, chunk: str) -> tuple[str, ...]:
        """The tokens of one chunk of text without white space."""
        words = self.cache.get(chunk)
        if words is None:
            words = self.specials.get(chunk) or self._split(chunk, self.specials)
            if len(words) > 1:
                words = self._merge(words)
            if len(self.cache) >= self.cache_size:
                self.cache.clear()
            self.cache[chunk] = words
        return words

    def _suffix_length(self, text: str) -> int:
        found = self.suffix_search(text)
        return found.end() - found.start() if found else 0

    def _merge(self, words: tuple[str, ...]) -> tuple[str, ...]:
        """spaCy's `_apply_special_cases`: token runs that spell a special case become its tokens."""
        found = [(i, j) for i in range(len(words) - 1) for j in range(i + 2, min(len(words), i + self.merge_length) + 1)
                 if words[i:j] in self.merges]
        if not found:
            return words
        seen: set[int] = set()
        picked = []
        for i, j in sorted(found, key=lambda span: (span[0] - span[1], span[0])):  # longest, then leftmost first
            if i not in seen and j - 1 not in seen:
                picked.append((i, j))
            seen.update(range(i, j))
        out, at = [], 0
        for i, j in sorted(picked):
            out += [*words[at:i], *self.specials[self.merges[words[i:j]]]]
            at = j
        return (*out, *words[at:])

    def _split(self, text: str, specials: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
        """spaCy's `Tokenizer._split_affixes` then `_attach_tokens` (English has no `token_match`)."""
        prefixes: list[str] = []
        suffixes: list[str] = []
        last = 0
        while text and len(text) != last and text not in specials:
            last = len(text)
            found = self.prefix_search(text)
            pre = found.end() - found.start() if found else 0
            if pre and text[pre:] in specials:
                prefixes.append(text[:pre])
                text = text[pre:]
                break
            suf = self._suffix_length(text[pre:])
            if suf and text[:-suf] in specials:
                suffixes.append(text[-suf:])
                text = text[:-suf]
                break
            if pre and suf and pre + suf <= len(text):
                prefixes.append(text[:pre])
                suffixes.append(text[-suf:])
                text = text[pre:-suf]
            elif pre:
                prefixes.append(text[:pre])
                text = text[pre:]
            elif suf:
                suffixes.append(text[-suf:])
                text = text[:-suf]
        return (*prefixes, *self._middle(text, specials), *reversed(suffixes))

    def _middle(self, text: str, specials: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
        if not text:
            return ()
        if text in specials:
            return specials[text]
        if self.url_match(text):
            return (text,)
        out, start = [], 0
        for found in self.infix_finditer(text):
            if found.start() == 0:
                continue
            if found.start() != start:
                out.append(text[start:found.start()])
            if found.end() != found.start():
                out.append(found.group())
            start = found.end()
        if text[start:]:
            out.append(text[start:])
        return tuple(out)
