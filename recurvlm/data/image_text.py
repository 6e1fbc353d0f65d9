"""Image-text data for pretraining: LLaVA-format conversations and WebDataset-layout tar shards.

Two sources, one item: a dict with `id`, `image` (uint8 [3, S, S]), `text` (a caption: the
shard's `.txt`, or a conversation's first assistant turn) and `conversations` (LLaVA's
`[{"from": "human"|"gpt", "value": ...}]`; a shard's caption becomes `<image>` -> caption), so a
CLIP pair (contrastive, on `text`) and an LLaVA pair (next-token loss, on `conversations`)
pretrain on either. The collates are `CaptionCollate` and `ConversationCollate`.

Images are resized to S x S in one of two ways (`resize=`): `"crop"` scales the shorter side to
S and cuts the centre square (CLIP's preprocessing); `"pad"` pads the image to a square with a
flat colour first and then scales it (LLaVA-1.5's `expand2square`, so nothing is cut off).

Bad data. A conversation record missing a key or malformed is an error naming the JSON file
and the record (the file is checked when read). An image that is missing or that PIL cannot
decode (a truncated or corrupt file) is found when the item is loaded: it is skipped, counted
and warned about (naming the file), or with `strict=True` raises naming the JSON file, the
record index and the image path. A skipped item still reaches the collate as a marker, so the
batch's `skipped` field counts skips exactly however many DataLoader workers ran them.

Shards are read with the standard library's `tarfile`, not the `webdataset` package: what we
need (brace patterns, a disjoint shard split over DataLoader workers x DDP ranks, seeded
shuffling, skip counting that survives worker processes) is a few dozen lines, and the package
would add a dependency outside constraints.txt whose skip handler drops bad samples without a
count we can log. Members are grouped by WebDataset's key (the path up to the first dot of the
file name: `0001.jpg` + `0001.txt`); tar files are read as streams (`r|*`, plain or compressed).
"""

from __future__ import annotations

import io
import itertools
import json
import os
import random
import re
import tarfile
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from ..models.tokenizer import HFTokenizer, Tokenizer, WordTokenizer, split_words
from .datamodule import EpochShuffle

IMAGE_MARKER = "<image>"
RESIZE = ("crop", "pad")
TEMPLATES = ("vicuna_v1", "plain")
ROLES = {"human": "USER:", "gpt": "ASSISTANT:"}  # LLaVA-1.5's conv_vicuna_v1 role names
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "ppm", "bmp")
IGNORE_INDEX = -100  # labels that the loss skips (PyTorch's cross_entropy default)


class ImageTextError(ValueError):
    """Bad image-text data; the one-line message names the file and the record or sample."""


# --- images --------------------------------------------------------------------------------

def load_image(source: str | os.PathLike | bytes, image_size: int, *, resize: str = "crop",
               pad_color: Sequence[int] = (127, 127, 127)) -> Tensor:
    """An image file (path or bytes) as uint8 [3, S, S], S = image_size (see the module docstring
    for `resize`). Raises whatever PIL raises for a missing, truncated or corrupt file."""
    if resize not in RESIZE:
        raise ValueError(f"unknown resize {resize!r}; valid: {', '.join(RESIZE)}")
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
        im = im.convert("RGB")  # decodes every byte: a truncated file fails here
    w, h = im.size
    if resize == "pad":
        side = max(w, h)
        canvas = Image.new("RGB", (side, side), tuple(int(c) for c in pad_color))
        canvas.paste(im, ((side - w) // 2, (side - h) // 2))
        im = canvas.resize((image_size, image_size), Image.Resampling.BICUBIC)
    else:
        scale = image_size / min(w, h)
        nw, nh = max(image_size, round(w * scale)), max(image_size, round(h * scale))
        im = im.resize((nw, nh), Image.Resampling.BICUBIC)
        left, top = (nw - image_size) // 2, (nh - image_size) // 2
        im = im.crop((left, top, left + image_size, top + image_size))
    return torch.from_numpy(np.asarray(im).transpose(2, 0, 1).copy())  # [3, S, S]


def _why(e: BaseException) -> str:
    first = str(e).splitlines()[0][:200] if str(e) else ""
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


def skipped_item(where: str) -> dict[str, Any]:
    """The marker a dataset yields for an item it skipped (the collates count and drop it)."""
    return {"skipped": 1, "where": where}


# --- LLaVA-format conversations --------------------------------------------------------------

def _check_conversations(conv: Any) -> str | None:
    """Why `conv` is not a usable LLaVA conversation, or None if it is."""
    if not isinstance(conv, list) or not conv:
        return "'conversations' must be a non-empty list of turns"
    for i, turn in enumerate(conv):
        if not (isinstance(turn, dict) and turn.get("from") in ROLES and isinstance(turn.get("value"), str)):
            return f"turn {i} must be {{'from': 'human'|'gpt', 'value': str}}, got {str(turn)[:80]}"
        if turn["from"] != ("human" if i % 2 == 0 else "gpt"):
            return f"turn {i} is from {turn['from']!r}: turns must alternate human, gpt, ..."
        if i > 0 and IMAGE_MARKER in turn["value"]:
            return f"turn {i} has {IMAGE_MARKER}: only the first human turn may"
    if conv[0]["value"].count(IMAGE_MARKER) != 1:
        return f"the first human turn needs exactly one {IMAGE_MARKER}"
    if len(conv) % 2:
        return "the last turn must be from gpt (an answer to learn)"
    return None


def read_conversations(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a LLaVA-format JSON list (or JSONL file), each checked: a bad one raises
    `ImageTextError` naming the file and the record index (JSONL: the line)."""
    path = Path(path)
    if not path.is_file():
        raise ImageTextError(f"{path}: conversation file not found")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        records = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ImageTextError(f"{path}: line {lineno}: malformed JSON ({e.msg})") from None
    else:
        try:
            records = json.loads(text)
        except json.JSONDecodeError as e:
            raise ImageTextError(f"{path}: malformed JSON ({e.msg} at line {e.lineno})") from None
        if not isinstance(records, list):
            raise ImageTextError(f"{path}: expected a JSON list of records, got {type(records).__name__}")
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise ImageTextError(f"{path}: record {i}: expected a JSON object, got {type(rec).__name__}")
        missing = [k for k in ("id", "image", "conversations") if k not in rec]
        why = (f"missing key(s) {', '.join(missing)}" if missing
               else "'image' must be a path relative to the image folder" if not isinstance(rec["image"], str)
               else _check_conversations(rec["conversations"]))
        if why:
            raise ImageTextError(f"{path}: record {i} (id {rec.get('id', '?')}): {why}")
    return records


def first_answer(conversations: Sequence[dict[str, str]]) -> str:
    """A conversation's caption: its first assistant turn (LLaVA's caption data has one)."""
    return conversations[1]["value"].strip()


class ConversationDataset(Dataset):
    """A LLaVA-format conversation file over an image folder (`image` paths are relative to it).

    Records are checked on construction (see `read_conversations`); images are decoded when
    an item is loaded. A missing or undecodable image gives a skipped marker (counted in
    `skipped`, per process, and warned about) or, with `strict`, an `ImageTextError`.
    """

    def __init__(self, path: str | os.PathLike, image_folder: str | os.PathLike, *, image_size: int,
                 resize: str = "pad", pad_color: Sequence[int] = (127, 127, 127), strict: bool = False) -> None:
        if resize not in RESIZE:
            raise ValueError(f"unknown resize {resize!r}; valid: {', '.join(RESIZE)}")
        self.path, self.image_folder = Path(path), Path(image_folder)
        if not self.image_folder.is_dir():
            raise ImageTextError(f"{self.image_folder}: image folder not found (for {self.path})")
        self.records = read_conversations(self.path)
        self.image_size, self.resize, self.pad_color, self.strict = image_size, resize, tuple(pad_color), strict
        self.skipped = 0

    def __len__(self) -> int:
        return len(self.records)

    def texts(self) -> Iterator[str]:
        """Every turn's text (the image marker removed): what a word vocabulary must cover."""
        for rec in self.records:
            for turn in rec["conversations"]:
                yield turn["value"].replace(IMAGE_MARKER, " ")

    def __getitem__(self, i: int) -> dict[str, Any]:
        rec = self.records[i]
        image = self.image_folder / rec["image"]
        try:
            pixels = load_image(image, self.image_size, resize=self.resize, pad_color=self.pad_color)
        except Exception as e:  # PIL raises many types for missing, truncated and corrupt files
            where = f"{self.path}: record {i} (id {rec['id']}): image {image}: {_why(e)}"
            if self.strict:
                raise ImageTextError(where) from None
            self.skipped += 1
            warnings.warn(f"{where}; skipped", stacklevel=2)
            return skipped_item(where)
        return {"id": str(rec["id"]), "image": pixels, "conversations": rec["conversations"],
                "text": first_answer(rec["conversations"]), "skipped": 0}


# --- WebDataset-layout tar shards ------------------------------------------------------------

_BRACE = re.compile(r"\{([^{}]*)\}")


def expand_shards(spec: str | Sequence[str]) -> list[str]:
    """Shard paths from a brace pattern (`data/shard-{000000..000009}.tar`, `{a,b}`; several
    braces multiply out), or from a list of such patterns. Zero padding follows the range's
    first bound."""
    if not isinstance(spec, str):
        return [p for s in spec for p in expand_shards(s)]
    m = _BRACE.search(spec)
    if m is None:
        return [spec]
    body = m.group(1)
    rng = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if rng:
        lo, hi = int(rng.group(1)), int(rng.group(2))
        if hi < lo:
            raise ValueError(f"shard pattern {spec!r}: range {{{body}}} runs backwards")
        options = [str(n).zfill(len(rng.group(1))) for n in range(lo, hi + 1)]
    else:
        options = body.split(",")
    return [p for o in options for p in expand_shards(spec[: m.start()] + o + spec[m.end():])]


def split_shards(shards: Sequence[str], *, rank: int, world_size: int, worker: int, num_workers: int) -> list[str]:
    """The shards of DataLoader worker `worker` on DDP rank `rank`: dealt round-robin over the
    ranks first, then over the rank's workers (as WebDataset's split_by_node, split_by_worker),
    so every shard goes to exactly one reader and ranks differ by at most one shard."""
    return list(shards[rank::world_size][worker::num_workers])


def _key_ext(name: str) -> tuple[str, str]:
    """WebDataset's grouping: `dir/0001.seg.png` -> ("dir/0001", "seg.png")."""
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def _buffer_shuffle(items: Iterable[Any], size: int, rng: random.Random) -> Iterator[Any]:
    """Shuffle a stream through a buffer of `size` items (WebDataset's `shuffle(size)`)."""
    buf: list[Any] = []
    for it in items:
        if len(buf) < size:
            buf.append(it)
            continue
        j = rng.randrange(size)
        buf[j], it = it, buf[j]
        yield it
    rng.shuffle(buf)
    yield from buf


class ShardDataset(IterableDataset):
    """Image + caption pairs from WebDataset-layout tar shards (`<key>.jpg|png|...` + `<key>.txt`).

    Each (rank, worker) reader takes its own shards (`split_shards`) of an order drawn from
    (seed, epoch) when `shuffle` is on, then shuffles its samples through a buffer of
    `shuffle_buffer` seeded by (seed, epoch, reader): the stream is a pure function of (seed,
    epoch, world size, worker count). rank / world_size default to torch.distributed's when it
    is initialised. A sample missing its image or caption, with an image PIL cannot decode, or
    cut off by a truncated tar, is skipped (a marker the collate counts; warned about), or
    raises `ImageTextError` with `strict`. Under DDP give every rank the same number of shards
    of equal size, or ranks run out of data at different steps.
    """

    def __init__(self, shards: str | Sequence[str], *, image_size: int, resize: str = "crop",
                 pad_color: Sequence[int] = (127, 127, 127), seed: int = 0, shuffle: bool = True,
                 shuffle_buffer: int = 1000, strict: bool = False, rank: int | None = None,
                 world_size: int | None = None) -> None:
        if resize not in RESIZE:
            raise ValueError(f"unknown resize {resize!r}; valid: {', '.join(RESIZE)}")
        self.shards = expand_shards(shards)
        if not self.shards:
            raise ImageTextError(f"shards {shards!r}: the pattern names no files")
        missing = [s for s in self.shards if not Path(s).is_file()]
        if missing:
            more = f" (+{len(missing) - 1} more)" if len(missing) > 1 else ""
            raise ImageTextError(f"shard not found: {missing[0]}{more} (from {shards!r})")
        self.image_size, self.resize, self.pad_color = image_size, resize, tuple(pad_color)
        self.seed, self.shuffle, self.shuffle_buffer, self.strict = seed, shuffle, shuffle_buffer, strict
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.skipped = 0

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle for `epoch` (the training module calls it at every epoch's start)."""
        self.epoch = int(epoch)

    def _world(self) -> tuple[int, int]:
        if self.rank is not None or self.world_size is not None:
            rank, world = self.rank or 0, self.world_size or 1
        elif torch.distributed.is_available() and torch.distributed.is_initialized():
            rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        else:
            rank, world = 0, 1
        if not 0 <= rank < world:
            raise ValueError(f"ShardDataset: rank {rank} is not in 0..{world - 1}")
        return rank, world

    def reader_shards(self, *, rank: int = 0, world_size: int = 1, worker: int = 0, num_workers: int = 1) -> list[str]:
        """The shards one reader takes this epoch, in its reading order."""
        order = list(self.shards)
        if self.shuffle:
            random.Random(self.seed * 1_000_003 + self.epoch).shuffle(order)
        return split_shards(order, rank=rank, world_size=world_size, worker=worker, num_workers=num_workers)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        rank, world = self._world()
        info = get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        shards = self.reader_shards(rank=rank, world_size=world, worker=worker, num_workers=n_workers)
        if not shards and self.epoch == 0:
            warnings.warn(f"ShardDataset: {len(self.shards)} shard(s) for {world * n_workers} readers "
                          f"(ranks x workers): reader {rank * n_workers + worker} has none", stacklevel=2)
        items = itertools.chain.from_iterable(self._read(s) for s in shards)
        if self.shuffle and self.shuffle_buffer > 1:
            reader = rank * n_workers + worker
            rng = random.Random((self.seed * 1_000_003 + self.epoch) * 1_000_003 + reader)
            items = _buffer_shuffle(items, self.shuffle_buffer, rng)
        yield from items

    def _skip(self, where: str) -> dict[str, Any]:
        if self.strict:
            raise ImageTextError(where)
        self.skipped += 1
        warnings.warn(f"{where}; skipped", stacklevel=3)
        return skipped_item(where)

    def _groups(self, shard: str) -> Iterator[tuple[str, dict[str, bytes]] | str]:
        """(key, {ext: bytes}) per sample in tar order; a string (why) where the tar breaks off."""
        key, parts, n = None, {}, 0
        try:
            with tarfile.open(shard, mode="r|*") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    k, ext = _key_ext(member.name)
                    if k != key:  # the previous sample is complete: hand it out before reading on
                        if key is not None:
                            yield key, parts
                            n += 1
                        key, parts = k, {}
                    parts[ext] = tar.extractfile(member).read()  # type: ignore[union-attr]
        except (tarfile.TarError, OSError, EOFError) as e:
            yield f"{shard}: unreadable after {n} sample(s) ({_why(e)})"
            return
        if key is not None:
            yield key, parts

    def _read(self, shard: str) -> Iterator[dict[str, Any]]:
        for group in self._groups(shard):
            if isinstance(group, str):
                yield self._skip(group)
                continue
            key, parts = group
            where = f"{shard}: sample {key}"
            image = next((parts[e] for e in IMAGE_EXTS if e in parts), None)
            if image is None or "txt" not in parts:
                yield self._skip(f"{where}: missing {'image' if image is None else 'txt'} "
                                 f"(has {', '.join(sorted(parts)) or 'nothing'})")
                continue
            try:
                caption = parts["txt"].decode("utf-8").strip()
                pixels = load_image(image, self.image_size, resize=self.resize, pad_color=self.pad_color)
            except Exception as e:  # PIL raises many types for corrupt files; bad UTF-8 too
                yield self._skip(f"{where}: {_why(e)}")
                continue
            conv = [{"from": "human", "value": IMAGE_MARKER}, {"from": "gpt", "value": caption}]
            yield {"id": f"{Path(shard).name}/{key}", "image": pixels, "text": caption, "conversations": conv,
                   "skipped": 0}

    def texts(self) -> Iterator[str]:
        """Every caption of every shard (reads them all): what a word vocabulary must cover."""
        for shard in self.shards:
            for group in self._groups(shard):
                if not isinstance(group, str) and "txt" in group[1]:
                    yield group[1]["txt"].decode("utf-8", errors="replace")


# --- tokenization and collates ---------------------------------------------------------------

def text_ids(tokenizer: Tokenizer, text: str) -> list[int]:
    """Token ids of `text` without BOS/EOS (pieces of a longer sequence)."""
    if isinstance(tokenizer, WordTokenizer):
        return tokenizer.word_ids(text)
    if isinstance(tokenizer, HFTokenizer):
        return list(tokenizer.tokenizer(text, add_special_tokens=False)["input_ids"])
    raise TypeError(f"no piecewise encoding for {type(tokenizer).__name__}; valid: WordTokenizer, HFTokenizer")


def bos_id(tokenizer: Tokenizer) -> int | None:
    if isinstance(tokenizer, HFTokenizer):
        return tokenizer.tokenizer.bos_token_id
    return getattr(tokenizer, "bos_token_id", None)


def extend_vocabulary(tokenizer: WordTokenizer, texts: Iterable[str]) -> WordTokenizer:
    """`tokenizer` with the words of `texts` it lacks appended (sorted), so every id it had
    stays the same: a model pretrained with it reads the stimulus questions as one trained
    with the plain task vocabulary would."""
    known = set(tokenizer.tokens)
    new: set[str] = set()
    for text in texts:
        new.update(w for w in split_words(text.replace(IMAGE_MARKER, " ")) if w not in known)
    return WordTokenizer([*tokenizer.tokens[4:], *sorted(new)]) if new else tokenizer


class ConversationEncoder:
    """A conversation -> (input_ids, labels) for an LLaVA pair's LM; labels are IGNORE_INDEX
    on everything but the assistant turns (each answer's tokens and the EOS that ends it, so
    the model learns to stop, as LLaVA trains).

    Templates: `vicuna_v1` (LLaVA-1.5's, without the system prompt):
        BOS USER: <image x N> q1 ASSISTANT: a1 EOS USER: q2 ASSISTANT: a2 EOS ...
    with the image placeholders at the start of the first human turn (LLaVA-1.5 moves `<image>`
    there), and
    `plain` (LLaVA's caption pretraining: the human text is dropped): BOS <image x N> a1 EOS.
    Sequences longer than `max_length` are cut at the end; a cut into the image is an error.
    """

    def __init__(self, tokenizer: Tokenizer, *, num_image_tokens: int, image_token_id: int, max_length: int,
                 template: str = "vicuna_v1") -> None:
        if template not in TEMPLATES:
            raise ValueError(f"unknown template {template!r}; valid: {', '.join(TEMPLATES)}")
        self.tokenizer, self.template = tokenizer, template
        self.num_image_tokens, self.image_token_id, self.max_length = num_image_tokens, image_token_id, max_length
        self.bos = bos_id(tokenizer)
        self.roles = {r: text_ids(tokenizer, s) for r, s in ROLES.items()}

    def __call__(self, conversations: Sequence[dict[str, str]]) -> tuple[list[int], list[int]]:
        if self.template == "plain" and len(conversations) != 2:
            raise ValueError(f"template plain takes one human and one gpt turn, got {len(conversations)} turns")
        ids: list[int] = [] if self.bos is None else [self.bos]
        labels = [IGNORE_INDEX] * len(ids)
        for i, turn in enumerate(conversations):
            if turn["from"] == "human":
                if self.template == "plain":
                    piece = [self.image_token_id] * self.num_image_tokens
                else:
                    text = turn["value"].replace(IMAGE_MARKER, " ").strip()
                    image = [self.image_token_id] * self.num_image_tokens if i == 0 else []
                    piece = self.roles["human"] + image + text_ids(self.tokenizer, text) + self.roles["gpt"]
                ids += piece
                labels += [IGNORE_INDEX] * len(piece)
            else:
                piece = text_ids(self.tokenizer, turn["value"].strip()) + [self.tokenizer.eos_token_id]
                ids += piece
                labels += piece
        if len(ids) > self.max_length:
            if ids.index(self.image_token_id) + self.num_image_tokens > self.max_length:
                raise ValueError(f"max_length={self.max_length} cuts into the {self.num_image_tokens} image tokens; "
                                 f"raise it")
            ids, labels = ids[: self.max_length], labels[: self.max_length]
        return ids, labels


def _kept(items: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    kept = [it for it in items if "image" in it]
    return kept, sum(int(it.get("skipped", 0)) for it in items)


def _images(kept: list[dict[str, Any]], image_size: int) -> Tensor:
    return torch.stack([it["image"] for it in kept]) if kept else torch.zeros(0, 3, image_size, image_size,
                                                                             dtype=torch.uint8)


class CaptionCollate:
    """Items -> {image [B, 3, S, S] uint8, input_ids / attention_mask [B, L] (the captions,
    L = context_length), id, skipped (markers in this batch)}; skipped markers are dropped."""

    def __init__(self, tokenizer: Tokenizer, context_length: int, image_size: int) -> None:
        self.tokenizer, self.context_length, self.image_size = tokenizer, context_length, image_size

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        kept, skipped = _kept(items)
        ids, mask = self.tokenizer.encode([it["text"] for it in kept], context_length=self.context_length)
        return {"image": _images(kept, self.image_size), "input_ids": ids, "attention_mask": mask,
                "id": [it["id"] for it in kept], "skipped": skipped}


class ConversationCollate:
    """Items -> {image, input_ids [B, L] (right-padded to the longest), attention_mask [B, L]
    (long), labels [B, L] (IGNORE_INDEX outside assistant turns and on padding), id, skipped}."""

    def __init__(self, encoder: ConversationEncoder, image_size: int) -> None:
        self.encoder, self.image_size = encoder, image_size

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        kept, skipped = _kept(items)
        seqs = [self.encoder(it["conversations"]) for it in kept]
        width = max((len(ids) for ids, _ in seqs), default=0)
        ids = torch.full((len(kept), width), self.encoder.tokenizer.pad_token_id, dtype=torch.long)
        labels = torch.full((len(kept), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(kept), width), dtype=torch.long)
        for row, (seq, lab) in enumerate(seqs):
            ids[row, : len(seq)] = torch.tensor(seq)
            labels[row, : len(lab)] = torch.tensor(lab)
            mask[row, : len(seq)] = 1
        return {"image": _images(kept, self.image_size), "input_ids": ids, "attention_mask": mask, "labels": labels,
                "id": [it["id"] for it in kept], "skipped": skipped}


# --- DataModules -----------------------------------------------------------------------------

class _ImageTextDataModule(L.LightningDataModule):
    """Training data only. `collate` depends on the network (captions for a CLIP pair,
    conversations with image placeholders for an LLaVA pair), so the entry point sets it
    once the network is built; `template` and `max_length` say how conversations are laid out."""

    def __init__(self, *, image_size: int, batch_size: int, num_workers: int, seed: int, template: str,
                 max_length: int) -> None:
        super().__init__()
        if template not in TEMPLATES:
            raise ValueError(f"pretrain_data.template={template!r}; valid: {', '.join(TEMPLATES)}")
        self.image_size, self.batch_size, self.num_workers, self.seed = image_size, batch_size, num_workers, seed
        self.template, self.max_length = template, max_length
        self.collate: Any = None
        self.dataset: ConversationDataset | ShardDataset

    def texts(self) -> Iterator[str]:
        """The texts a word vocabulary must cover: the data's, and the template's role names."""
        if self.template == "vicuna_v1":
            yield from ROLES.values()
        yield from self.dataset.texts()

    def _loader(self, dataset: Dataset, **kwargs: Any) -> DataLoader:
        if self.collate is None:
            raise RuntimeError("set the datamodule's collate (CaptionCollate or ConversationCollate) before training")
        return DataLoader(dataset, batch_size=self.batch_size, num_workers=self.num_workers, collate_fn=self.collate,
                          **kwargs)


class ConversationDataModule(_ImageTextDataModule):
    """A LLaVA-format JSON/JSONL file over an image folder; the order is a pure function of
    (seed, epoch) (`EpochShuffle`; Lightning shards it over DDP ranks)."""

    def __init__(self, *, path: str, image_folder: str, image_size: int, resize: str = "pad",
                 pad_color: Sequence[int] = (127, 127, 127), strict: bool = False, batch_size: int = 16,
                 num_workers: int = 0, seed: int = 0, template: str = "vicuna_v1", max_length: int = 512) -> None:
        super().__init__(image_size=image_size, batch_size=batch_size, num_workers=num_workers, seed=seed,
                         template=template, max_length=max_length)
        self.dataset = ConversationDataset(path, image_folder, image_size=image_size, resize=resize,
                                           pad_color=pad_color, strict=strict)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.dataset, sampler=EpochShuffle(len(self.dataset), self.seed),
                            persistent_workers=self.num_workers > 0)


class ShardDataModule(_ImageTextDataModule):
    """WebDataset-layout tar shards (`ShardDataset`). Workers are not persistent, so each epoch's
    workers get the dataset with that epoch's `set_epoch` and reshuffle."""

    def __init__(self, *, shards: str | Sequence[str], image_size: int, resize: str = "crop",
                 pad_color: Sequence[int] = (127, 127, 127), strict: bool = False, shuffle: bool = True,
                 shuffle_buffer: int = 1000, batch_size: int = 64, num_workers: int = 0, seed: int = 0,
                 template: str = "plain", max_length: int = 512) -> None:
        super().__init__(image_size=image_size, batch_size=batch_size, num_workers=num_workers, seed=seed,
                         template=template, max_length=max_length)
        shards = list(shards) if not isinstance(shards, str) else shards  # Hydra passes ListConfig
        self.dataset = ShardDataset(shards, image_size=image_size, resize=resize, pad_color=pad_color, seed=seed,
                                    shuffle=shuffle, shuffle_buffer=shuffle_buffer, strict=strict)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.dataset)
