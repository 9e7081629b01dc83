"""Instruction tokenizers that need no model hub.

``ByteTokenizer`` (the default) maps UTF-8 bytes to ids. Why bytes: every Unicode instruction
encodes without an unknown token, there is nothing to train or download, the vocabulary (259) keeps
the embedding tiny, and robot instructions are short, so the longer byte sequences cost little
(they live in the prefix cache, computed once per goal). ``FileTokenizer`` wraps a `tokenizers`
``tokenizer.json`` (e.g. SmolLM2's, from a local directory) for pretrained language models.

``pretrained_vocabulary`` finds a tokenizer with a pretrained token-embedding table, for
``VLAConfig.token_embeddings``: ``"wordllama"`` is the PyPI package wordllama 0.4 (MIT code; its
Llama-2 32,000-token BPE and a [32000, 256] table distilled from Llama-2-tokenizer models, which
carry the Llama 2 Community License's terms, so vla_ros installs them from PyPI as the optional
extra ``language`` and never copies the table into a checkpoint), or a local directory with a
tokenizer.json and an embeddings.safetensors holding one [vocab, width] tensor. Never a hub.
"""

from __future__ import annotations

import hashlib
import importlib.util
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

    def __init__(self, path: str | Path, casefold: bool = False):
        """``casefold`` adds a Lowercase normaliser in front of the file's own (saved with it)."""
        from tokenizers import Tokenizer, normalizers

        self.path = Path(path)
        self._tok = Tokenizer.from_file(str(self.path))
        if casefold:
            own = self._tok.normalizer
            self._tok.normalizer = normalizers.Sequence([normalizers.Lowercase(), *([own] if own else [])])
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

WORDLLAMA = "wordllama"
WORDLLAMA_FILES = ("tokenizers/l2_supercat_tokenizer_config.json", "weights/l2_supercat_256.safetensors")


def pretrained_vocabulary(source: str) -> tuple[Path, Path]:
    """(tokenizer.json, embeddings.safetensors) of ``source``: "wordllama" or a local directory."""
    if source == WORDLLAMA:
        spec = importlib.util.find_spec(WORDLLAMA)
        if spec is None or spec.origin is None:
            raise FileNotFoundError(
                "token_embeddings 'wordllama' needs the PyPI package wordllama==0.4.0.post1 "
                "(pip install 'vla_ros[language]'); no hub is read")
        root = Path(spec.origin).parent
        paths = tuple(root / f for f in WORDLLAMA_FILES)
    else:
        root = Path(source)
        paths = (root / TOKENIZER_FILE, root / "embeddings.safetensors")
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"token_embeddings {source!r}: {path} is missing")
    return paths


def embedding_table(source: str, sha256: str | None = None) -> tuple[torch.Tensor, str]:
    """The frozen table [vocab, width] of ``source`` as float32 and the SHA-256 of its file;
    raises ValueError when ``sha256`` is given and differs (another table than the model's)."""
    from safetensors.torch import load_file

    _, weights = pretrained_vocabulary(source)
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    if sha256 is not None and digest != sha256:
        raise ValueError(f"token_embeddings {source!r}: {weights} has SHA-256 {digest[:12]}..., the model "
                         f"was trained with {sha256[:12]}...")
    tensors = load_file(str(weights))
    if len(tensors) != 1 or next(iter(tensors.values())).ndim != 2:
        raise ValueError(f"token_embeddings {source!r}: {weights} must hold one [vocab, width] tensor, has "
                         f"{ {k: tuple(v.shape) for k, v in tensors.items()} }")
    return next(iter(tensors.values())).float(), digest


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
