"""Lines and tokens. In: decoded text. Out: its lines, and the tokens of each line by one of three
tokenizers (`corpus.tokenizer`):

    words       raw text: Unicode NFKC, optional lowercasing, words (with inner apostrophes) and
                single punctuation marks as tokens: "And God said, Let" -> and god said , let.
                A blank line holds no tokens and is dropped.
    whitespace  pre-tokenized text (PTB, WikiText, anything KenLM's lmplz or pytorch/examples
                reads): tokens are what lies between ASCII spaces and tabs (and `\\r`), exactly as
                written; nothing is normalised, case is kept unless lowercasing is asked for. A
                blank line is an empty sentence whose `</s>` is predicted (KenLM's lmplz and
                query; pytorch/examples' data.py). The delimiters are those of KenLM's
                lm/builder/corpus_count.cc (kDelimiterSet: NUL, tab, newline, `\\r`, space), so
                U+00A0, U+3000, U+2028, `\\v` and `\\f` stay inside tokens.
    chars       characters: NFKC, optional lowercasing, runs of whitespace become one `▁`.

Lines end only at `\\n` in every mode (KenLM's rule; Python's `str.splitlines` also ends lines at
`\\r`, `\\v`, `\\f`, U+0085, U+2028 and U+2029, which would make sentences KenLM does not see).

The unknown-word marker (`corpus.unk`, default `<unk>`; PTB and WikiText write it in the text)
is the vocabulary's `<unk>` for the words and whitespace tokenizers: one token, never split, counted
and predicted like any word. An empty marker turns this off.
"""

from __future__ import annotations

import re
import unicodedata

TOKENIZERS = ("words", "whitespace", "chars")
WORD_PATTERN = re.compile(r"[^\W_]+(?:'[^\W_]+)*|[^\w\s]|_", re.UNICODE)
SEPARATORS = re.compile(r"[ \t\r]+")   # lmplz's delimiters; NUL is refused when decoding
# KenLM's query reads words with util::FilePiece (util/file_piece.cc, kSpaces: C's isspace), so
# when scoring it also separates words at \v and \f; `lmpipe ngram query` does the same.
QUERY_SEPARATORS = re.compile(r"[ \t\r\v\f]+")
SPACE = "▁"
UNK = "<unk>"     # the vocabulary's unknown word (id 0, pipeline/text/vocab.py)


def split_lines(text: str) -> list[str]:
    """Lines of `text`, ended only by `\\n`; a final `\\n` ends the last line (no empty line after
    it), as for `lmplz`."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def tokenize(line: str, tokenizer: str = "words", lowercase: bool = True,
             unk: str = UNK) -> list[str]:
    """Tokens of one line (no `<s>`/`</s>`). A token equal to `unk` becomes `<unk>`.
    Raises ValueError for an unknown tokenizer."""
    if tokenizer == "whitespace":
        tokens = [t for t in SEPARATORS.split(line) if t]
        if unk:
            tokens = [UNK if t == unk else t for t in tokens]
        if lowercase:
            tokens = [t if t == UNK else t.lower() for t in tokens]
        return tokens
    text = unicodedata.normalize("NFKC", line).strip()
    if tokenizer == "chars":
        if lowercase:
            text = text.lower()
        return [SPACE if ch.isspace() else ch for ch in " ".join(text.split())]
    if tokenizer != "words":
        raise ValueError(f"unknown tokenizer {tokenizer!r}; use one of {', '.join(TOKENIZERS)}")
    if unk and unk in text:     # the marker as a whole word: keep it out of the word pattern
        pieces = re.split(r"(?<!\S)" + re.escape(unk) + r"(?!\S)", text)
        tokens = []
        for i, piece in enumerate(pieces):
            if i:
                tokens.append(UNK)
            tokens += _words(piece, lowercase)
        return tokens
    return _words(text, lowercase)


def _words(text: str, lowercase: bool) -> list[str]:
    return WORD_PATTERN.findall(text.lower() if lowercase else text)
