"""The diffusion policy's vocabulary: a deterministic character-level HF fast tokenizer.

Contract:

* Built from a fixed character set (``lavida_envs.base.CHARSET``), a fixed list of
  LaTeX commands and a fixed list of frequent instruction words -- no training data, so
  the same call gives the same ids on every machine.
* Every digit is its own token (numbers are read one digit at a time).
* Special tokens (skipped by ``decode(..., skip_special_tokens=True)``): ``<pad>``,
  ``<eos>``, ``<mask>``, ``<unk>``, ``<image>`` (observed-image placeholder), ``<boi>``,
  ``<eoi>`` and one ``<img_k>`` per image code ``k`` of the codec's codebook.
* Format tags ``<think>``, ``</think>``, ``<answer>``, ``</answer>`` are single ordinary
  tokens (kept by ``decode``), so rewards see them.
* Saved and loaded with ``save_pretrained`` / ``AutoTokenizer.from_pretrained``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from lavida_envs.base import CHARSET

__all__ = [
    "FORMAT_TAGS",
    "LATEX_COMMANDS",
    "SPECIAL_TOKENS",
    "WORDS",
    "SpecialIds",
    "build_tokenizer",
    "code_token",
    "special_ids",
]

PAD, EOS, MASK, UNK, IMAGE, BOI, EOI = "<pad>", "<eos>", "<mask>", "<unk>", "<image>", "<boi>", "<eoi>"
#: Special tokens in id order (ids 0..6).
SPECIAL_TOKENS: tuple[str, ...] = (PAD, EOS, MASK, UNK, IMAGE, BOI, EOI)
#: Response format tags: one ordinary token each.
FORMAT_TAGS: tuple[str, ...] = ("<think>", "</think>", "<answer>", "</answer>")
#: LaTeX commands that become one token each (anything else falls back to characters).
LATEX_COMMANDS: tuple[str, ...] = (
    "\\frac", "\\dfrac", "\\sqrt", "\\pi", "\\boxed", "\\times", "\\cdot", "\\div", "\\circ",
    "\\angle", "\\triangle", "\\left", "\\right", "\\le", "\\ge", "\\ne", "\\infty", "\\text",
    "\\degree", "\\pm", "\\perp", "\\parallel",
)  # fmt: skip
#: Frequent whole words of instructions and solutions that become one token each
#: (matched only as whole words; other words are spelled in characters).
WORDS: tuple[str, ...] = (
    "the", "The", "of", "and", "is", "in", "to", "a", "an", "what", "What", "Which", "which",
    "image", "answer", "Answer", "final", "your", "Put", "put", "inside", "tags", "Think",
    "think", "step", "by", "then", "give", "Give", "sum", "difference", "product", "number",
    "numbers", "value", "shown", "area", "perimeter", "angle", "length", "side", "total",
    "count", "How", "how", "many", "much", "are", "there", "box", "bounding", "object",
    "coordinates", "pixel", "Find", "find", "with", "that", "this", "for", "on", "at", "as",
    "from", "so", "We", "we", "It", "it", "be", "each", "color", "colour", "shape", "shapes",
    "red", "green", "blue", "yellow", "orange", "purple", "cyan", "gray", "circle", "square",
    "triangle", "rectangle", "largest", "smallest", "left", "right", "top", "bottom", "above",
    "below", "Edit", "edit", "Make", "make", "into", "Change", "change", "Remove", "remove",
    "Add", "add", "Move", "move", "output", "edited", "result", "equals", "equal", "than",
    "plus", "minus", "times", "Compute", "compute", "Read", "read", "written", "expression",
)  # fmt: skip


def code_token(k: int) -> str:
    """The token text of image code ``k``."""
    return f"<img_{k}>"


@dataclass(frozen=True)
class SpecialIds:
    """Ids of the structural tokens and the image-code id range ``[code_start, code_end)``.

    ``unk``/``image``/``boi``/``eoi`` are None for a tokenizer without them (the text-only ids of an
    HF backbone, :func:`agents.hf.denoiser.text_special_ids`); no position then counts as one.
    """

    pad: int
    eos: int
    mask: int
    unk: int | None
    image: int | None
    boi: int | None
    eoi: int | None
    code_start: int
    code_end: int

    @property
    def codebook_size(self) -> int:
        """Number of image-code tokens."""
        return self.code_end - self.code_start

    def present(self, *names: str) -> list[int]:
        """The ids of the named fields that this tokenizer has (None ones left out)."""
        return [v for v in (getattr(self, n) for n in names) if v is not None]

    def is_any(self, sequences: torch.Tensor, *names: str) -> torch.Tensor:
        """(same shape) bool: where ``sequences`` holds one of the named ids (all False when none exists)."""
        hit = torch.zeros_like(sequences, dtype=torch.bool)
        for value in self.present(*names):
            hit |= sequences == value
        return hit


def build_tokenizer(codebook_size: int, words: tuple[str, ...] = WORDS) -> PreTrainedTokenizerFast:
    """The deterministic tokenizer: specials, characters, tags, LaTeX, words, then image codes."""
    if not isinstance(codebook_size, int) or codebook_size < 1:
        raise ValueError(f"codebook_size must be a positive int, got {codebook_size!r}")
    vocab: dict[str, int] = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in CHARSET:
        vocab.setdefault(ch, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens([AddedToken(t, normalized=False) for t in SPECIAL_TOKENS])
    backend.add_tokens([AddedToken(t, normalized=False) for t in FORMAT_TAGS + LATEX_COMMANDS])
    backend.add_tokens([AddedToken(w, normalized=False, single_word=True) for w in dict.fromkeys(words)])
    codes = [AddedToken(code_token(k), normalized=False, special=True) for k in range(codebook_size)]
    backend.add_special_tokens(codes)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        eos_token=EOS,
        mask_token=MASK,
        unk_token=UNK,
        model_max_length=1 << 16,
        padding_side="left",
    )
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE, BOI, EOI]})
    ids = special_ids(tokenizer)
    if ids.codebook_size != codebook_size:
        raise AssertionError(f"built {ids.codebook_size} image-code tokens, expected {codebook_size}")
    return tokenizer


def special_ids(tokenizer: PreTrainedTokenizerBase) -> SpecialIds:
    """The structural token ids of a tokenizer built by :func:`build_tokenizer` (checked)."""
    vocab = tokenizer.get_vocab()
    missing = [t for t in SPECIAL_TOKENS + FORMAT_TAGS + (code_token(0),) if t not in vocab]
    if missing:
        raise ValueError(
            f"tokenizer lacks the diffusion policy's tokens {missing}; build it with "
            "agents.diffusion.tokenizer.build_tokenizer"
        )
    start = vocab[code_token(0)]
    k = 0
    while code_token(k) in vocab:
        if vocab[code_token(k)] != start + k:
            raise ValueError(f"image-code tokens are not contiguous: {code_token(k)} has id {vocab[code_token(k)]}")
        k += 1
    return SpecialIds(
        pad=vocab[PAD], eos=vocab[EOS], mask=vocab[MASK], unk=vocab[UNK], image=vocab[IMAGE],
        boi=vocab[BOI], eoi=vocab[EOI], code_start=start, code_end=start + k,
    )  # fmt: skip
