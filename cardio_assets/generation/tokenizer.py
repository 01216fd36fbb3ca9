"""A real `CLIPTokenizer` built offline from the prompt vocabulary (no download).

We write a `vocab.json` + `merges.txt` such that every word of the prompts is a single BPE
token. CLIP's pre-tokenizer splits digits one by one, so "70s" is three tokens ("7", "0",
"s"); everything else ("male", "overweight", "bmi", "heart", "failure", ",") is one token.
Every byte-level character (alone and as word end, as in CLIP) is in the vocabulary too, so
any text still tokenizes, without unknown tokens, just into more pieces.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from transformers import CLIPTokenizer

BOS, EOS = "<|startoftext|>", "<|endoftext|>"

# Every word `cardio_assets.cohort.cells.prompt` can produce, so that prompts of cells absent from
# the training set still tokenize to whole-word tokens.
BASE_WORDS = (
    "female male age in s normal overweight obese bmi healthy heart failure , 0 1 2 3 4 5 6 7 8 9"
).split()

# CLIP's pre-tokenizer pattern (see transformers' CLIPTokenizer).
_PRETOKEN = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|[^\s\w]+""", re.UNICODE)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP byte -> printable unicode character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def prompt_words(prompts) -> list[str]:
    """The pre-tokens (lower-cased words, digits, punctuation) of the prompts plus BASE_WORDS."""
    words = list(BASE_WORDS)
    for text in prompts:
        words.extend(_PRETOKEN.findall(" ".join(text.lower().split())))
    byte_map = _bytes_to_unicode()
    seen, out = set(), []
    for w in words:
        w = "".join(byte_map[b] for b in w.encode("utf-8"))
        if w not in seen:
            seen.add(w)
            out.append(w)
    return out


def _base_vocab() -> dict[str, int]:
    chars = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for c in chars:
        vocab[c] = len(vocab)
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    return vocab


def _tokenizer(vocab: dict[str, int], merges: list[str], max_length: int) -> CLIPTokenizer:
    tok = CLIPTokenizer(vocab=dict(vocab), merges=[tuple(m.split(" ")) for m in merges])
    tok.model_max_length = max_length
    return tok


def _pieces(tok: CLIPTokenizer, word: str) -> list[str]:
    return tok.backend_tokenizer.model.tokenize(word)


def build_prompt_tokenizer(prompts, out_dir: str | Path, max_length: int = 20) -> CLIPTokenizer:
    """Write vocab.json + merges.txt (+ the tokenizer's own files) to `out_dir`; return it.

    Merges are added word by word at the lowest priority, joining whatever pieces the merges
    so far leave; words already whole keep their tokenization, because BPE always prefers the
    earlier (higher-priority) merges of their own chain.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab = _base_vocab()
    merges: list[str] = []
    words = prompt_words(prompts)
    for word in words:
        tok = _tokenizer(vocab, merges, max_length)
        pieces = [p.value for p in _pieces(tok, word)]
        if not pieces:
            continue
        # tokenize() of the model does not add "</w>": rebuild the end-of-word piece
        current = pieces[0]
        for nxt in pieces[1:]:
            merges.append(f"{current} {nxt}")
            current = current + nxt
            vocab.setdefault(current, len(vocab))
    for special in (BOS, EOS):
        vocab.setdefault(special, len(vocab))
    tok = _tokenizer(vocab, merges, max_length)
    bad = [w for w in words if len(tok.tokenize(w)) != 1]
    if bad:
        raise RuntimeError(f"tokenizer construction left words split: {bad[:10]}")
    (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (out_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tok.save_pretrained(out_dir)
    return CLIPTokenizer.from_pretrained(out_dir)
