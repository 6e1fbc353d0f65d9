"""Tokenizers behind one interface: a word-level one for the stimulus questions, and HF's for pretrained towers.

Both turn a batch of texts into `(ids [B, L], mask [B, L])` with L = context_length, BOS
first, EOS last (kept under truncation, since the text tower pools there) and padding on
the right, so one collate and one text tower serve either.
"""

from __future__ import annotations

import json
import re
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")  # ids 0..3, in this order
PUNCTUATION = "?,.!;:"
# a word is a run of anything but whitespace and punctuation; each punctuation mark is its own token
_TOKEN_RE = re.compile(rf"[^\s{re.escape(PUNCTUATION)}]+|[{re.escape(PUNCTUATION)}]")

# Words a question about our stimuli may use beyond those the generators emit today, so a
# reworded template or a hand-written probe question does not fall to <unk>.
COMMON_WORDS = (
    *PUNCTUATION,
    *(str(n) for n in range(21)),
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "yes", "no", "true", "false", "a", "an", "the", "this", "that", "these", "those", "it", "its",
    "is", "are", "was", "were", "be", "does", "do", "can", "there", "here", "how", "many", "much", "what",
    "which", "where", "who", "whether", "and", "or", "not", "of", "on", "in", "inside", "outside", "at", "to",
    "from", "by", "with", "between", "through", "along", "same", "different", "other", "another", "each",
    "left", "right", "top", "bottom", "above", "below", "up", "down", "front", "behind", "side", "sides",
    "near", "far", "center", "middle", "edge", "border", "owns", "own", "owner", "ownership", "belongs",
    "figure", "ground", "background", "foreground", "object", "objects", "shape", "shapes", "region",
    "dot", "dots", "marker", "markers", "point", "points", "line", "lines", "curve", "curves", "path",
    "paths", "maze", "wall", "walls", "start", "goal", "end", "connected", "connect", "reach", "reachable",
    "pass", "passes", "count", "number", "square", "squares", "circle", "circles", "triangle",
    "triangles", "cross", "crosses", "plus", "sign", "signs", "letter", "letters", "t", "ts", "x", "xs",
    "l", "ls", "red", "green", "blue", "yellow", "black", "white", "gray", "grey", "texture", "image",
)


def split_words(text: str) -> list[str]:
    """Lowercase `text` and split it into words and punctuation marks."""
    return _TOKEN_RE.findall(text.lower())


def join_words(words: Sequence[str]) -> str:
    """Inverse of `split_words` up to case and spacing: no space before punctuation."""
    out = ""
    for w in words:
        out += w if (not out or w in PUNCTUATION) else " " + w
    return out


def normalize(text: str) -> str:
    """The text a word-level round trip gives back: lowercased, spacing canonical."""
    return join_words(split_words(text))


def _check_context_length(context_length: int) -> None:
    if context_length < 2:
        raise ValueError(f"context_length must be at least 2 (BOS and EOS), got {context_length}")


@runtime_checkable
class Tokenizer(Protocol):
    """What a text tower and the collate need from a tokenizer."""

    @property
    def vocab_size(self) -> int: ...

    @property
    def eos_token_id(self) -> int: ...

    @property
    def pad_token_id(self) -> int: ...

    def encode(self, texts: list[str], *, context_length: int) -> tuple[Tensor, Tensor]:
        """ids LongTensor [B, L] and mask BoolTensor [B, L] (True for real tokens), L = context_length."""
        ...

    def decode(self, ids: Tensor | Sequence[Sequence[int]]) -> list[str]: ...


class WordTokenizer:
    """Word-level tokenizer for the synthetic question vocabulary of the stimulus tasks.

    The vocabulary is `SPECIAL_TOKENS` (ids 0..3) followed by the given words, deduplicated,
    in the given order. Text is lowercased and split on whitespace, with each punctuation
    mark its own token. A word outside the vocabulary becomes <unk>; `unknown` counts such
    words (per process: a DataLoader worker counts in its own copy) and each new one warns
    once, since an <unk> in a question can erase what the task asks.
    """

    pad_token_id = 0
    bos_token_id = 1
    eos_token_id = 2
    unk_token_id = 3

    def __init__(self, words: Sequence[str]) -> None:
        if isinstance(words, str):
            raise TypeError("words must be a sequence of words, not one string")
        tokens = list(SPECIAL_TOKENS)
        self._word_ids: dict[str, int] = {}
        for entry in words:
            for w in split_words(entry):
                if w not in self._word_ids and w not in SPECIAL_TOKENS:
                    self._word_ids[w] = len(tokens)
                    tokens.append(w)
        self.tokens: tuple[str, ...] = tuple(tokens)
        self.unknown: Counter[str] = Counter()

    @classmethod
    def for_tasks(
        cls,
        tasks: Sequence[str] | None = None,
        *,
        samples_per_level: int = 8,
        seed: int = 0,
        extra_words: Sequence[str] = (),
    ) -> WordTokenizer:
        """The words of every task's questions and answer choices (`samples_per_level` samples
        at the default difficulty and at every named level), plus `COMMON_WORDS` and
        `extra_words`, sorted so the ids depend only on the set of words."""
        from recurvlm.data.stimuli import TASK_NAMES, generate, get_task

        words = set(COMMON_WORDS)
        for entry in extra_words:
            words.update(split_words(entry))
        for name in TASK_NAMES if tasks is None else tasks:
            task = get_task(name)
            for level in (None, *task.levels):
                for index in range(samples_per_level):
                    sample = generate(name, seed, index, level)
                    for text in (sample.question, *sample.choices):
                        words.update(split_words(text))
        return cls(sorted(words))

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    def __len__(self) -> int:
        return len(self.tokens)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WordTokenizer) and self.tokens == other.tokens

    __hash__ = None  # mutable `unknown` counter; equality is by vocabulary

    def __repr__(self) -> str:
        return f"WordTokenizer(vocab_size={self.vocab_size})"

    def word_ids(self, text: str) -> list[int]:
        """Ids of the words of `text`, without BOS/EOS; unknown words (and the special tokens'
        spellings, which text cannot inject) map to <unk>."""
        ids = []
        for w in split_words(text):
            i = self._word_ids.get(w)
            if i is None:
                if w not in self.unknown:
                    warnings.warn(f"WordTokenizer: {w!r} is not in the vocabulary; encoded as <unk>", stacklevel=3)
                self.unknown[w] += 1
                i = self.unk_token_id
            ids.append(i)
        return ids

    def encode(self, texts: list[str], *, context_length: int) -> tuple[Tensor, Tensor]:
        """ids LongTensor [B, L] and mask BoolTensor [B, L], L = context_length: BOS, the words
        (truncated to L - 2), EOS, then padding."""
        if isinstance(texts, str):
            raise TypeError("encode takes a list of texts; wrap a single text in a list")
        _check_context_length(context_length)
        ids = torch.full((len(texts), context_length), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(texts), context_length), dtype=torch.bool)
        for row, text in enumerate(texts):
            seq = [self.bos_token_id, *self.word_ids(text)[: context_length - 2], self.eos_token_id]
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = True
        return ids, mask

    def decode(self, ids: Tensor | Sequence[Sequence[int]]) -> list[str]:
        """Texts of id rows [B, L]: each row up to its first EOS, without BOS and padding."""
        rows = ids.tolist() if isinstance(ids, Tensor) else ids
        texts = []
        for row in rows:
            words = []
            for i in row:
                i = int(i)
                if i == self.eos_token_id:
                    break
                if i not in (self.pad_token_id, self.bos_token_id):
                    words.append(self.tokens[i])
            texts.append(join_words(words))
        return texts

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable description that `from_dict` rebuilds exactly (ids included)."""
        return {"kind": "word", "tokens": list(self.tokens)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WordTokenizer:
        tokens = data.get("tokens")
        if data.get("kind") != "word" or not isinstance(tokens, list):
            raise ValueError(f"not a WordTokenizer description: keys {sorted(data)}, kind {data.get('kind')!r}")
        head = tuple(tokens[: len(SPECIAL_TOKENS)])
        if head != SPECIAL_TOKENS:
            raise ValueError(f"a WordTokenizer vocabulary starts with {SPECIAL_TOKENS}, got {head}")
        tok = cls(tokens[len(SPECIAL_TOKENS):])
        if tok.tokens != tuple(tokens):  # a duplicate or a multi-word entry would shift the ids
            raise ValueError("WordTokenizer vocabulary is not a list of distinct single words")
        return tok

    def save(self, path: str | Path) -> None:
        """Write the vocabulary as JSON (one token per line, readable in a diff)."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=0, ensure_ascii=False) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> WordTokenizer:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


class HFTokenizer:
    """`transformers.AutoTokenizer` behind the `Tokenizer` interface, for pretrained text towers.

    Pads to `context_length` on the right with the tokenizer's pad token (CLIP's is its EOS,
    which is why towers pool at the first EOS). A tokenizer without a pad token pads with EOS.
    `require_eos`: every encoded text must hold EOS (text towers pool there); False for a
    causal LM that scores answers after the prompt (LLaMA's tokenizer writes BOS only).
    """

    def __init__(self, name_or_path: str, *, require_eos: bool = True) -> None:
        from transformers import AutoTokenizer

        self.name_or_path, self.require_eos = name_or_path, require_eos
        self.tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=False)
        if self.tokenizer.eos_token_id is None:
            raise ValueError(f"tokenizer {name_or_path} has no EOS token; text towers pool there")
        self.tokenizer.padding_side = "right"
        self.tokenizer.truncation_side = "right"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)  # includes added tokens, unlike `tokenizer.vocab_size`

    @property
    def eos_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def pad_token_id(self) -> int:
        return self.tokenizer.pad_token_id

    def to_dict(self) -> dict[str, Any]:
        """Where to load it from again (checkpoints carry this, not the vocabulary)."""
        return {"kind": "hf", "name_or_path": self.name_or_path, "require_eos": self.require_eos}

    def __repr__(self) -> str:
        return f"HFTokenizer({self.name_or_path!r}, vocab_size={self.vocab_size})"

    def encode(self, texts: list[str], *, context_length: int) -> tuple[Tensor, Tensor]:
        """ids LongTensor [B, L] and mask BoolTensor [B, L], L = context_length."""
        if isinstance(texts, str):
            raise TypeError("encode takes a list of texts; wrap a single text in a list")
        _check_context_length(context_length)
        out = self.tokenizer(
            list(texts), padding="max_length", truncation=True, max_length=context_length, return_tensors="pt"
        )
        ids, mask = out["input_ids"].long(), out["attention_mask"].bool()
        # some tokenizers (LLaMA's) add no EOS; the tower would then pool at position 0 silently
        if self.require_eos and len(texts) and not (ids == self.eos_token_id).any(dim=1).all():
            raise ValueError(f"tokenizer {self.name_or_path} did not end every text with EOS")
        return ids, mask

    def decode(self, ids: Tensor | Sequence[Sequence[int]]) -> list[str]:
        return self.tokenizer.batch_decode(ids, skip_special_tokens=True)


def tokenizer_from_dict(data: dict[str, Any]) -> Tokenizer:
    """Rebuild a tokenizer from its `to_dict()` (as stored in checkpoints)."""
    kind = data.get("kind") if isinstance(data, dict) else None
    if kind == "word":
        return WordTokenizer.from_dict(data)
    if kind == "hf":
        return HFTokenizer(data["name_or_path"], require_eos=data.get("require_eos", True))
    raise ValueError(f"unknown tokenizer kind {kind!r}; valid kinds: word, hf")
