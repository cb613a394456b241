"""Find the final answer in a model response (linear time, any input size).

A response that closes a reasoning block (``</think>``: Qwen3's thinking mode, the R1 and Geometry3K templates) is
answered by what follows its last ``</think>``: a box or number inside the reasoning is not the answer.
Order: the last ``\\boxed{}`` / ``\\fbox{}`` (with boxes right before it that only a connector separates, so
``\\boxed{1}, \\boxed{2}`` is the answer ``1, 2`` and ``either \\boxed{3} or \\boxed{4}`` is the two candidates
``3, 4``), else the last ``<answer>...</answer>``, else a closing "final answer is X" sentence, else a bare answer
taken whole; a long response with none of these falls back to its last math segment, then its last number
(never a response that looks like code: ``lambda: 1`` answers nothing). A box or answer tag that holds a sentence
(``\\boxed{\\text{The answer is } 5}``) answers what its "is" names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mm_gmpo.reward.normalize import UNIT_WORDS, clean_unicode

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\b\s*")
_MATHLIKE_RE = re.compile(r"[\d\\]|^\(?[A-E]\)?$")  # a digit, a LaTeX command or a choice letter
_UNCLOSED_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
_ANSWER_OPEN, _ANSWER_CLOSE = "<answer>", "</answer>"
_THINK_CLOSE = "</think>"
_FINAL_RE = re.compile(
    r"(?:final\s+answer(?:\s+is)?|the\s+answer\s+is|\banswer\s*(?:is|:)|^\s*answer\b)\s*[:=]?\s*(?:\\\(|\\\[|\$+)?\s*",
    re.IGNORECASE | re.MULTILINE,
)
_MATH_SEGMENT_RE = re.compile(r"\$\$(.+?)\$\$|\$(.+?)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.DOTALL)
_NUMBER_RE = re.compile(r"(?<![A-Za-z_\^\d.])(?<![_^]\{)[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:[.,]\d+)?(?:\s*/\s*\d+)?")
_CONNECTOR_WORDS = {"and", "or", "also", "as", "well", "for", "part", "a", "b", "c", "the", "respectively", "both"}
_TEXT_CMD_RE = re.compile(r"\\(?:text|textbf|mathrm|mbox|textnormal)\s*\{([^{}]*)\}")
_BARE_MAX_CHARS = 200
_BARE_MATH_CHARS = 1000  # an answer of pure mathematics (no plain words) may be this long: a sum of many roots
# Program text: the fallbacks would pull a number out of it (``lambda: 1``, ``1 if x else 0``), so it answers nothing
_CODE_RE = re.compile(
    r"(?<![\\\w])(?:lambda\b|def\s+\w+\s*\(|import\s+\w|from\s+\w+\s+import\b|(?:print|eval|exec)\s*\(|(?:open|int|str|float)\(|"
    r"__\w+__|(?:os|sys|subprocess)\.\w|console\.log|function\s*\(|return\s+[\w(]+\s*;)|\S\s+if\s+\S[^\n]{0,200}?\s+else\s+\S"
)
_SENTENCE_WORDS = 3  # a box or tag holding at least this many plain words is a sentence
_BARE_WORDS = set(UNIT_WORDS.replace(" ", "|").split("|")) | {
    "and",
    "or",
    "percent",
    "percentage",
    "pct",
    "pi",
    "sqrt",
    "am",
    "pm",
}
_GOLD_SOLUTION_CHARS = 100  # a longer gold with a closing "the answer is X" sentence is a solution: X is its answer
MAX_ANSWER_CHARS = 2000  # an extracted answer longer than this is graded as a string only


@dataclass(frozen=True)
class Extraction:
    """What was taken from a response: the answer text, how it was found, and how many different candidates
    the final box group (or answer) offered."""

    answer: str | None
    method: str  # boxed | answer_tag | final_answer | bare | last_math | last_number | none
    candidates: int = 1


def _match_braces(text: str, open_at: int) -> int:
    """Index of the brace closing the one at ``open_at``, or -1. Escaped braces (``\\{``) do not count."""
    depth = 0
    i, n = open_at, len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def find_boxes(text: str) -> list[tuple[int, int, str]]:
    """Outermost boxes as (start, end, content), in order. Each brace is scanned at most once overall."""
    boxes: list[tuple[int, int, str]] = []
    covered = -1
    for m in _BOX_RE.finditer(text):
        if m.start() < covered:
            continue  # a box inside a box: the outer one counts
        i = m.end()
        if i < len(text) and text[i] == "{":
            close = _match_braces(text, i)
            if close < 0:
                break  # unclosed: nothing after it can close either
            boxes.append((m.start(), close + 1, text[i + 1 : close]))
            covered = close + 1
        else:  # \boxed 5
            token = re.match(r"[^\s$]+", text[i : i + 100])
            if token:
                boxes.append((m.start(), i + token.end(), token.group(0)))
                covered = i + token.end()
    return boxes


def _is_connector(gap: str) -> bool:
    """True when the text between two boxes only joins them (``, ``, ``and``, ``\\quad \\text{or}``)."""
    if len(gap) > 60 or "\n\n" in gap:
        return False
    gap = _TEXT_CMD_RE.sub(r" \1 ", gap)
    words = re.findall(r"[A-Za-z]+", re.sub(r"\\[A-Za-z]+", " ", gap))
    return sum(w.lower() not in _CONNECTOR_WORDS for w in words) <= 1


def _box_group(text: str, boxes: list[tuple[int, int, str]]) -> list[str]:
    group = [boxes[-1]]  # built backwards, then reversed (linear in the number of boxes)
    for box in reversed(boxes[:-1]):
        if not _is_connector(text[box[1] : group[-1][0]]):
            break
        group.append(box)
    return [content.strip() for _, _, content in reversed(group)]


def _distinct(items: list[str]) -> list[str]:
    seen: dict[str, str] = {}
    for item in items:
        seen.setdefault(re.sub(r"\s+", "", item), item)
    return list(seen.values())


def _final_answer(text: str, after: int = 0) -> str | None:
    """The answer in the last "final answer is X" sentence (starting at or after index ``after``); in a wordy
    sentence, what follows its last "is"."""
    offset = max(len(text) - 4000, after)
    tail = text[offset:]
    last = None
    for last in _FINAL_RE.finditer(tail):  # noqa: B007 (we want the last match)
        pass
    if last is None:
        return None
    rest = tail[last.end() :]
    end = re.search(r"\n\s*\n|\n(?![^\n]*(?:\\\]|\$\$))|\.(?:\s|$)", rest)
    sentence = (rest[: end.start()] if end else rest).strip().strip("*_").strip()  # markdown **Answer:** C
    sentence = re.sub(r'^(?:\\?"|“)(.*)(?:\\?"|”)$', r"\1", sentence).strip()  # quoted: "$12$ and $13$"
    sentence = re.sub(r"^(?:\\\(|\\\[|\$+)|(?:\\\)|\\\]|\$+)$", "", sentence).strip().rstrip(".")
    if not sentence:
        return None
    if _looks_bare(sentence) or looks_like_code(sentence):
        return sentence  # code is compared whole (as text): no number is pulled out of it
    after_is = re.split(r"\s(?:is|are|equals|=)\s", sentence)[-1].strip().rstrip(".")
    if after_is != sentence and _looks_bare(after_is):
        return re.sub(r"^\$+|\$+$", "", after_is).strip()
    segments = [next(g for g in m.groups() if g is not None) for m in _MATH_SEGMENT_RE.finditer(sentence)]
    if segments:
        return segments[-1].strip()
    numbers = _NUMBER_RE.findall(sentence)
    return numbers[-1] if numbers else None


def _looks_bare(text: str) -> bool:
    """A short answer, not a sentence: no plain words outside LaTeX commands and ``\\text{}`` except units and
    connectors (``28 percent``, ``10 square units``), or a text answer of at most two words (``Evelyn``). Pure
    mathematics (no plain words at all) may be up to ``_BARE_MATH_CHARS`` long."""
    if len(text) > _BARE_MATH_CHARS or "\n\n" in text:
        return False
    plain = re.sub(r"\\(?:begin|end)\{[A-Za-z*]+\}|\\[A-Za-z]+", " ", _TEXT_CMD_RE.sub(" x ", text))
    words = re.findall(r"[A-Za-z]{2,}", plain)
    if len(text) > _BARE_MAX_CHARS:
        return not words
    if not re.search(r"\s", text):
        return True  # no space at all: not a sentence (W(x)=1orW(x)=-1)
    if re.fullmatch(r"[A-Za-z]+(?: [A-Za-z]+)?\.?", text.strip()):
        return True
    return all(w.lower() in _BARE_WORDS for w in words)


def looks_like_code(text: str) -> bool:
    """Program text (``lambda: 1``, ``print(1)``, ``1 if x else 0``): no number is pulled out of it. Only the
    last 4000 characters are read (the fallbacks read no further back), so the check stays linear."""
    return bool(_CODE_RE.search(text[-4000:]))


def _sentence_answer(content: str) -> str:
    """What a box or answer tag holding a sentence answers: ``The answer is 5`` and ``\\text{the area is 12}``
    answer the bare part after their "is"; any other sentence stays whole (compared as text, so it earns nothing
    unless the gold is that sentence)."""
    unwrapped = _TEXT_CMD_RE.sub(r" \1 ", content).strip()
    if len(re.findall(r"[A-Za-z]{2,}", re.sub(r"\\[A-Za-z]+", " ", unwrapped))) < _SENTENCE_WORDS:
        return content
    final = _final_answer(unwrapped) or re.split(r"\s(?:is|are|equals|=)\s", unwrapped)[-1].strip().rstrip(".")
    if final and final != unwrapped and _looks_bare(final) and not looks_like_code(final):
        return final
    return content


def extract_answer(response: str, *, gold: bool = False) -> Extraction:
    """The final answer of ``response``. With ``gold=True`` (a reference answer or solution) only boxes and
    answer tags are looked for before taking the whole string."""
    text = clean_unicode(response or "")
    if not gold and _THINK_CLOSE in text:
        text = text.rpartition(_THINK_CLOSE)[2]  # the answer follows the reasoning
    if not text.strip():
        return Extraction(None, "none", 0)
    boxes = find_boxes(text)
    if boxes and not gold:  # a closing "The final answer is X" after the last box overrides that box
        final = _final_answer(text, after=boxes[-1][1])
        if final and _MATHLIKE_RE.search(final):  # not "I believe the answer is correct."
            return Extraction(final, "final_answer")
    if boxes:
        group = _distinct([_sentence_answer(content) for content in _distinct(_box_group(text, boxes))])
        return Extraction(", ".join(group), "boxed", len(group))
    close = text.rfind(_ANSWER_CLOSE)
    if close >= 0:
        open_at = text.rfind(_ANSWER_OPEN, 0, close)
        if open_at >= 0:
            content = text[open_at + len(_ANSWER_OPEN) : close].strip()
            return Extraction(_sentence_answer(content) if content else None, "answer_tag")
    if (unclosed := _UNCLOSED_BOX_RE.search(text)) and _match_braces(text, unclosed.end() - 1) < 0:
        # a box never closed (a gold with a data error, a response cut inside its box): the short rest is the
        # answer; training scores responses cut at the length limit 0 anyway (compute_rewards zero_truncated)
        rest = text[unclosed.end() :].strip()
        if rest and len(rest) <= _GOLD_SOLUTION_CHARS and "\n" not in rest:
            return Extraction(rest, "boxed")
    final = None if gold and len(text) <= _GOLD_SOLUTION_CHARS else _final_answer(text)
    if gold and not final:
        return Extraction(text.strip(), "bare")  # a gold is an answer, unless a solution ending "the answer is X"
    if final:
        return Extraction(final, "final_answer")
    if _looks_bare(text.strip()):
        return Extraction(text.strip(), "bare")
    if looks_like_code(text):  # program text: only explicit answers (box, tag, final sentence) count
        short = text.strip()
        return Extraction(short, "bare") if len(short) <= 60 and "\n" not in short else Extraction(None, "none", 0)
    tail = text[-4000:]
    segment = number = None
    for segment in _MATH_SEGMENT_RE.finditer(tail):  # noqa: B007 (we want the last match)
        pass
    for number in _NUMBER_RE.finditer(tail):  # noqa: B007
        pass
    # whichever ends later: "... $d = 90/n$ ... so there are 12 sequences." answers 12
    if number is not None and (segment is None or number.end() > segment.end()):
        return Extraction(number.group(0), "last_number")
    if segment is not None:
        content = next(g for g in segment.groups() if g is not None).strip()
        if content:
            return Extraction(content, "last_math")
    if len(text) <= 60 and "\n" not in text.strip():
        return Extraction(text.strip(), "bare")  # a short text answer ("not enough information")
    return Extraction(None, "none", 0)
