"""Instruction tokenizers that need no model hub.

``ByteTokenizer`` (the default) maps UTF-8 bytes to ids. Why bytes: every Unicode instruction
encodes without an unknown token, there is nothing to train or download, the vocabulary (259) keeps
the embedding tiny, and robot instructions are short, so the longer byte sequences cost little
(they live in the prefix cache, computed once per goal). ``FileTokenizer`` wraps a `tokenizers`
``tokenizer.json`` (e.g. SmolLM2's, from a local directory) for pretrained language models.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

TOKENIZER_FILE = "tokenizer.json"


@dataclass
class Encoded:
    ids: list[int]
    truncated: bool
    dropped_tokens: int


class ByteTokenizer:
    """UTF-8 bytes; with ``casefold`` the text is casefolded and its whitespace collapsed first, so
    "PICK  up" and "pick up" are the same tokens (an uncased model, like uncased BERT)."""

    kind = "bytes-utf8"
    pad_id, bos_id, eos_id = 0, 1, 2
    offset = 3  # byte b -> id b + 3
    vocab_size = 256 + offset

    def __init__(self, casefold: bool = False):
        self.casefold = casefold

    def encode(self, text: str, max_tokens: int) -> Encoded:
        """[BOS] + UTF-8 bytes, truncated to max_tokens (the drop is reported, never silent)."""
        if self.casefold:
            text = " ".join(text.casefold().split())
        ids = [self.bos_id] + [b + self.offset for b in text.encode("utf-8")]
        return _truncate(ids, max_tokens)

    def decode(self, ids: list[int]) -> str:
        data = bytes(i - self.offset for i in ids if i >= self.offset)
        return data.decode("utf-8", errors="replace")

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / TOKENIZER_FILE
        path.write_text(json.dumps({"type": self.kind, "vocab_size": self.vocab_size,
                                    "casefold": self.casefold}, indent=2))
        return path


class FileTokenizer:
    """A `tokenizers` tokenizer.json (byte-level BPE of SmolLM2 and friends)."""

    kind = "tokenizers"

    def __init__(self, path: str | Path):
        from tokenizers import Tokenizer

        self.path = Path(path)
        self._tok = Tokenizer.from_file(str(self.path))
        self.vocab_size = self._tok.get_vocab_size()
        self.pad_id = 0
        bos = self._tok.token_to_id("<|endoftext|>") or self._tok.token_to_id("<s>")
        self.bos_id = 0 if bos is None else bos

    def encode(self, text: str, max_tokens: int) -> Encoded:
        return _truncate([self.bos_id] + self._tok.encode(text, add_special_tokens=False).ids, max_tokens)

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids)

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / TOKENIZER_FILE
        self._tok.save(str(path))
        return path


Tokenizer = ByteTokenizer | FileTokenizer


def _truncate(ids: list[int], max_tokens: int) -> Encoded:
    if len(ids) <= max_tokens:
        return Encoded(ids, False, 0)
    return Encoded(ids[:max_tokens], True, len(ids) - max_tokens)


def load_tokenizer(directory: str | Path) -> Tokenizer:
    path = Path(directory) / TOKENIZER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing tokenizer file")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    if data.get("type") == ByteTokenizer.kind:
        casefold = data.get("casefold", False)  # checkpoints from before the option are cased
        if not isinstance(casefold, bool):
            raise ValueError(f"{path}: casefold must be true or false, got {casefold!r}")
        return ByteTokenizer(casefold=casefold)
    if "model" in data:  # a `tokenizers` file
        return FileTokenizer(path)
    raise ValueError(f"{path}: unknown tokenizer type {data.get('type')!r}")


def batch_encode(tokenizer: Tokenizer, texts: list[str], max_tokens: int,
                 device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor, list[Encoded]]:
    """Right-padded ids [B, L] and mask [B, L] (1 = real token)."""
    encoded = [tokenizer.encode(t, max_tokens) for t in texts]
    length = max(len(e.ids) for e in encoded)
    ids = torch.full((len(texts), length), tokenizer.pad_id, dtype=torch.long)
    mask = torch.zeros((len(texts), length), dtype=torch.long)
    for row, e in enumerate(encoded):
        ids[row, : len(e.ids)] = torch.tensor(e.ids)
        mask[row, : len(e.ids)] = 1
    return ids.to(device), mask.to(device), encoded
