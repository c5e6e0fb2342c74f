"""CLIP: the Flickr8k loader, the symmetric contrastive loss and zero-shot classification (chapter 03).

Chapter 03 ("CLIP: contrastive language–image pre-training") derives everything here:

* :func:`load_flickr8k` — the Flickr8k captions (all 40,460) with the first 1,000 images by name (those the
  course ships), MD5-checked, from the course's copy or the official zip files; :func:`parse_captions` and
  :func:`parse_split` read the original text files, including the ``#n`` caption ids and the one group keyed
  ``2258277193_586949ec62.jpg.1``.
* :class:`WordTokenizer` — a small word-level tokenizer with ``<sos>``/``<eos>`` markers, so the text
  encoder can pool at the end-of-sequence token as CLIP does.
* :class:`LogitScale` and :func:`clip_loss` — the symmetric InfoNCE loss over the ``N × N`` image–text
  similarity matrix with a learned, log-parameterised temperature clipped at 100 (Radford et al. 2021).
* :func:`class_embeddings`, :func:`zero_shot_logits` — zero-shot classification with prompt templates
  and prompt ensembling; :func:`retrieval_recall` — image→text and text→image Recall@K.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
import tempfile
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .data import ChecksumError, DataMissingError, cache_root, data_root, fetch, missing_error

# ---------------------------------------------------------------- Flickr8k (Hodosh, Young & Hockenmaier 2013)

FLICKR8K_DIR = "flickr8k"
FLICKR8K_SPLITS = ("train", "dev", "test")
_FLICKR8K_TEXT = {  # relative path -> MD5 (shared/data/MD5SUMS)
    "Flickr8k_text/Flickr8k.token.txt": "e898e3ced284f72589f239c4f6301778",
    "Flickr8k_text/Flickr_8k.trainImages.txt": "cfaa3c7cf0e98c3db5331ae3e084d0ad",
    "Flickr8k_text/Flickr_8k.devImages.txt": "d4348c27e43a7a7c667fc1e1af1a17ca",
    "Flickr8k_text/Flickr_8k.testImages.txt": "80b71e57cb3e4187f4b8068489fbc74a",
}
_SPLIT_FILE = {"train": "Flickr8k_text/Flickr_8k.trainImages.txt", "dev": "Flickr8k_text/Flickr_8k.devImages.txt",
               "test": "Flickr8k_text/Flickr_8k.testImages.txt"}
FLICKR8K_N_IMAGES = 1000  # the course ships the first 1,000 image files by name (of 8,091)
_FLICKR8K_IMAGES_MD5 = "6c73dd59206e84b0be1efc6cc0042017"  # MD5 of the 1,000 files concatenated in name order
# The official release as it is usually downloaded: two zip files, read in place (never extracted). Their MD5s
# are the ones other projects' Flickr8k loaders record for these URLs (e.g. mlverse/torchvision).
_FLICKR8K_URL = "https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/"
_FLICKR8K_TEXT_ZIP = ("Flickr8k_text.zip", "bf6c1abcb8e4a833b7f922104de18627")
_FLICKR8K_IMAGES_ZIP = ("Flickr8k_Dataset.zip", "f18a1e2920de5bd84dae7cf08ec78978")
_GROUP_QUIRK = re.compile(r"\.jpg\.\d+$")


@dataclass
class Flickr8k:
    """One Flickr8k split: ``images`` uint8 ``(N, 3, S, S)``, ``captions[i]`` the five captions of image
    ``i`` and ``names[i]`` its file name (chapter 03)."""

    images: torch.Tensor
    captions: list[list[str]]
    names: list[str]

    def __len__(self) -> int:
        return len(self.names)

    def pairs(self) -> tuple[list[str], torch.Tensor]:
        """All captions flattened, and for each the index of its image: ``(texts, caption_to_image (M,))``."""
        texts = [c for caps in self.captions for c in caps]
        owner = torch.tensor([i for i, caps in enumerate(self.captions) for _ in caps], dtype=torch.long)
        return texts, owner


def parse_captions(text: str) -> dict[str, list[str]]:
    """Parse ``Flickr8k.token.txt``: lines ``<image>.jpg#<n>\\t<caption>`` → ``{image: [caption_0, ...]}``.

    The ``#n`` suffix is the caption number (captions are returned in that order). The official file keys
    one caption as ``2258277193_586949ec62.jpg.1#0``; the ``.jpg.1`` is folded back to ``.jpg`` so that image
    has its five captions. Raises ``ValueError`` naming a malformed line. Chapter 03, "Data".
    """
    groups: dict[str, dict[int, str]] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        key, sep, caption = line.partition("\t")
        name, hash_, number = key.rpartition("#")
        if not sep or not hash_ or not number.isdigit() or not name:
            raise ValueError(f"line {lineno} is not '<image>#<n>\\t<caption>': {line!r}")
        name = _GROUP_QUIRK.sub(".jpg", name)
        groups.setdefault(name, {})[int(number)] = caption.strip()
    return {name: [caps[k] for k in sorted(caps)] for name, caps in groups.items()}


def parse_split(text: str) -> list[str]:
    """Parse a split file (one image name per line) into a list of names, in file order (chapter 03, "Data")."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def _decode_square(raw: bytes, size: int) -> np.ndarray:
    """Decode a JPEG, resize its short side to ``size`` and centre-crop to ``(size, size, 3)`` uint8."""
    from PIL import Image

    img = Image.open(io.BytesIO(raw))
    img.draft("RGB", (size, size))  # let libjpeg downscale by 2/4/8 while decoding (fast)
    img = img.convert("RGB")
    w, h = img.size
    scale = size / min(w, h)
    img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return np.asarray(img.crop((left, top, left + size, top + size)))


def flickr8k_image_names(captions: dict[str, list[str]]) -> list[str]:
    """The names of the images the course ships: the first 1,000 of all captioned images, sorted by name
    (chapter 03, "Data")."""
    return sorted(captions)[:FLICKR8K_N_IMAGES]


def _missing_flickr8k(path: Path) -> DataMissingError:
    root = data_root() / FLICKR8K_DIR
    return missing_error(path, _FLICKR8K_URL, "Flickr8k", hint=(
        "Flickr8k is distributed for research use only, so the course never downloads it. Put either the official "
        f"release's {_FLICKR8K_TEXT_ZIP[0]} and {_FLICKR8K_IMAGES_ZIP[0]} (from {_FLICKR8K_URL}, as downloaded) "
        f"in {root}, or the course's copy there (folders Flickr8k_text/ and images/)."))


def _flickr8k_zip(name: str, md5: str) -> tuple[Path, dict[str, zipfile.ZipInfo]] | None:
    """An official Flickr8k zip, MD5-checked by :func:`helpers.data.fetch`, and its members by base name;
    None if the zip is absent (it is never downloaded)."""
    if not (data_root() / FLICKR8K_DIR / name).exists():
        return None
    path = fetch(f"{FLICKR8K_DIR}/{name}", md5, _FLICKR8K_URL + name, "Flickr8k")
    with zipfile.ZipFile(path) as zf:
        return path, {Path(i.filename).name: i for i in zf.infolist()
                      if not i.is_dir() and not i.filename.startswith("__MACOSX/")}


def _flickr8k_text(rel: str, md5: str) -> str:
    """A Flickr8k text file: the course's copy (MD5-checked file by file) or the member of the official
    ``Flickr8k_text.zip`` (the zip MD5-checked). Never downloaded."""
    path = data_root() / FLICKR8K_DIR / rel
    if path.exists():
        return fetch(f"{FLICKR8K_DIR}/{rel}", md5, _FLICKR8K_URL, "Flickr8k").read_text(encoding="utf-8")
    found = _flickr8k_zip(*_FLICKR8K_TEXT_ZIP)
    if found is None:
        raise _missing_flickr8k(path)
    zpath, members = found
    name = Path(rel).name
    if name not in members:
        raise ChecksumError(f"Flickr8k: {zpath} has no {name}")
    with zipfile.ZipFile(zpath) as zf:
        return zf.read(members[name]).decode("utf-8")


def _flickr8k_image_bytes(shipped: list[str], wanted: set[str], official: bool) -> dict[str, bytes]:
    """The JPEG bytes of the ``wanted`` images: from the course's ``images/`` folder (every ``shipped`` file
    present, their concatenation MD5-checked) or, when ``official`` (no such folder), from the official
    ``Flickr8k_Dataset.zip`` (the zip MD5-checked)."""
    folder = data_root() / FLICKR8K_DIR / "images"
    found = _flickr8k_zip(*_FLICKR8K_IMAGES_ZIP) if official else None
    if found is not None:
        zpath, members = found
        absent = [n for n in shipped if n not in members]
        if absent:
            raise ChecksumError(f"Flickr8k: {zpath} lacks {len(absent)} of the images, e.g. {absent[0]}")
        with zipfile.ZipFile(zpath) as zf:
            return {n: zf.read(members[n]) for n in shipped if n in wanted}
    for n in shipped:
        if not (folder / n).exists():
            raise _missing_flickr8k(folder / n)
    digest, raws = hashlib.md5(), {}
    for n in shipped:
        raw = (folder / n).read_bytes()
        digest.update(raw)
        if n in wanted:
            raws[n] = raw
    if digest.hexdigest() != _FLICKR8K_IMAGES_MD5:
        raise ChecksumError(f"Flickr8k: the {FLICKR8K_N_IMAGES} images in {folder} have MD5 {digest.hexdigest()} "
                            f"(concatenated in name order), expected {_FLICKR8K_IMAGES_MD5}; compare each file "
                            "with the course's MD5SUMS.")
    return raws


def load_flickr8k(split: str = "train", image_size: int = 64) -> Flickr8k:
    """Flickr8k image–caption pairs of one split, restricted to the images present (chapter 03).

    Reads ``$COURSE_DATA/flickr8k/`` in one of two layouts. The course's copy: ``Flickr8k_text/`` (the caption
    and split files, MD5-checked one by one) and ``images/`` (the 1,000 images, checked for presence — a
    missing one raises :class:`~helpers.data.DataMissingError` naming it and ``COURSE_DATA`` — and together
    against the MD5 of their concatenation). Or the official release's ``Flickr8k_text.zip`` and
    ``Flickr8k_Dataset.zip`` as downloaded, each MD5-checked and read in place; the same 1,000 images (the
    first by name) are used, at their original resolution. Images are decoded once, resized (short side) and
    centre-cropped to ``image_size`` and cached under :func:`~helpers.data.cache_root`. Of the official
    6000/1000/1000 split, 753/113/125 of these images are present.
    """
    if split not in FLICKR8K_SPLITS:
        raise ValueError(f"split must be one of {FLICKR8K_SPLITS}, got {split!r}")
    if not isinstance(image_size, int) or not 8 <= image_size <= 512:
        raise ValueError(f"image_size must be an int in [8, 512], got {image_size!r}")
    texts = {rel: _flickr8k_text(rel, md5) for rel, md5 in _FLICKR8K_TEXT.items()}
    captions = parse_captions(texts["Flickr8k_text/Flickr8k.token.txt"])
    shipped = flickr8k_image_names(captions)
    wanted = set(parse_split(texts[_SPLIT_FILE[split]]))
    names = [n for n in shipped if n in wanted]
    official = not (data_root() / FLICKR8K_DIR / "images").is_dir()  # then the images come from the zip
    tag = (_FLICKR8K_IMAGES_ZIP[1] if official else _FLICKR8K_IMAGES_MD5)[:8]
    cached = cache_root() / f"flickr8k-{tag}-{split}-{image_size}.pt"
    if cached.exists():
        blob = torch.load(cached, weights_only=True)
        return Flickr8k(blob["images"], [captions[n] for n in names], names)
    raws = _flickr8k_image_bytes(shipped, wanted, official)
    images = torch.from_numpy(np.stack([_decode_square(raws[n], image_size) for n in names])).permute(0, 3, 1, 2)
    images = images.contiguous()
    with tempfile.NamedTemporaryFile(dir=cached.parent, delete=False, suffix=".tmp") as tmp:
        torch.save({"images": images}, tmp.name)
    os.replace(tmp.name, cached)
    return Flickr8k(images, [captions[n] for n in names], names)


# ---------------------------------------------------------------- tokenizer (chapter 03, "The text encoder")

_WORD = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*")


class WordTokenizer:
    """Lower-cased word tokens with four specials: ``<pad>`` 0, ``<unk>`` 1, ``<sos>`` 2, ``<eos>`` 3.

    CLIP uses a 49,152-token byte-pair encoding; a word vocabulary is enough for our small corpora and keeps
    sequences short. :meth:`encode` brackets every text with ``<sos>`` … ``<eos>`` and returns where the
    ``<eos>`` sits, the position whose feature represents the whole text (chapter 03).
    """

    PAD, UNK, SOS, EOS = 0, 1, 2, 3
    SPECIALS = ("<pad>", "<unk>", "<sos>", "<eos>")

    def __init__(self, words: Iterable[str] = ()):
        self.itos = list(self.SPECIALS) + [w for w in words if w not in self.SPECIALS]
        if len(set(self.itos)) != len(self.itos):
            seen: set[str] = set()
            dups = sorted({w for w in self.itos if w in seen or seen.add(w)})
            raise ValueError(f"the vocabulary has duplicate words: {dups}")
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    @staticmethod
    def split(text: str) -> list[str]:
        """``"A dog's ball."`` → ``["a", "dog's", "ball"]`` (punctuation is dropped)."""
        if not isinstance(text, str):
            raise ValueError(f"expected a str, got {type(text).__name__}: {text!r}")
        return _WORD.findall(text.lower())

    @classmethod
    def fit(cls, texts: Iterable[str], min_count: int = 1) -> "WordTokenizer":
        """Build the vocabulary from ``texts``: words seen at least ``min_count`` times, most frequent first."""
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        counts = Counter(w for t in texts for w in cls.split(t))
        return cls(w for w, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if c >= min_count)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, texts: Sequence[str], context: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``texts`` → ``(tokens (B, context) long, eos (B,) long)``; too-long texts keep their first
        ``context - 2`` words; unknown words map to ``<unk>``; the rest is ``<pad>``."""
        if context < 3:
            raise ValueError(f"context must be >= 3 (<sos>, one word, <eos>), got {context}")
        if isinstance(texts, str):
            raise ValueError(f"expected a list of texts, got the single string {texts!r}")
        tokens = torch.full((len(texts), context), self.PAD, dtype=torch.long)
        eos = torch.empty(len(texts), dtype=torch.long)
        for i, text in enumerate(texts):
            ids = [self.SOS] + [self.stoi.get(w, self.UNK) for w in self.split(text)][: context - 2] + [self.EOS]
            tokens[i, : len(ids)] = torch.tensor(ids)
            eos[i] = len(ids) - 1
        return tokens, eos

    def decode(self, ids: Sequence[int]) -> str:
        """Token ids back to words (specials other than ``<unk>`` are dropped)."""
        return " ".join(self.itos[i] for i in ids if i not in (self.PAD, self.SOS, self.EOS))


# ---------------------------------------------------------------- the loss (chapter 03, Eq. (1)–(3))


class LogitScale(nn.Module):
    """CLIP's learnable inverse temperature ``s = exp(t)``, stored as its log ``t`` (chapter 03, Eq. (3)).

    Initialised to ``1 / init_temperature`` (0.07 in the paper) and clipped so that ``s <= max_scale`` (100 in
    the paper) by :meth:`clip_`, which clamps the parameter itself: call it after each optimiser step. The
    forward pass applies no clamp (as in OpenCLIP): a clamp there passes zero gradient above the cap, and in
    recent PyTorch also exactly at it, so a ``t`` that reached the cap could never come back down.
    """

    def __init__(self, init_temperature: float = 0.07, max_scale: float = 100.0):
        super().__init__()
        if not 0 < init_temperature:
            raise ValueError(f"init_temperature must be > 0, got {init_temperature}")
        if not max_scale >= 1 / init_temperature:
            raise ValueError(f"max_scale={max_scale} is below the initial scale 1/{init_temperature}")
        self.max_log = math.log(max_scale)
        self.log_scale = nn.Parameter(torch.tensor(math.log(1 / init_temperature)))

    def forward(self) -> torch.Tensor:
        return self.log_scale.exp()

    @torch.no_grad()
    def clip_(self) -> None:
        self.log_scale.clamp_(max=self.max_log)


def similarity_logits(image_emb: torch.Tensor, text_emb: torch.Tensor,
                      scale: torch.Tensor | float = 1.0) -> torch.Tensor:
    """``s · cos(I_i, T_j)`` for all pairs: ``(N, D), (M, D)`` → ``(N, M)`` in float32 (chapter 03, Eq. (1))."""
    if image_emb.ndim != 2 or text_emb.ndim != 2 or image_emb.shape[1] != text_emb.shape[1]:
        raise ValueError(f"expected (N, D) and (M, D) embeddings, got {tuple(image_emb.shape)} and "
                         f"{tuple(text_emb.shape)}")
    # checked where that costs no GPU sync: a Python number or a CPU tensor (a CUDA scale comes from LogitScale)
    if not isinstance(scale, torch.Tensor) or scale.device.type == "cpu":
        if not torch.all(torch.as_tensor(scale) > 0):
            raise ValueError(f"scale must be > 0, got {scale}")
    i = F.normalize(image_emb.float(), dim=-1)
    t = F.normalize(text_emb.float(), dim=-1)
    return scale * (i @ t.T)


def clip_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """The symmetric contrastive loss of CLIP (chapter 03, Eq. (2)).

    Row ``i`` of the scaled cosine-similarity matrix ``L = s · Î T̂^T`` (``(N, N)``) is a softmax classifier
    over the ``N`` texts whose correct class is ``i``; column ``i`` one over the images. The loss is the
    mean of the two cross-entropies. Embeddings are L2-normalised here; ``scale`` is ``s = 1/τ``.
    """
    if image_emb.shape != text_emb.shape:
        raise ValueError(f"image and text embeddings must be paired (same shape), got {tuple(image_emb.shape)} "
                         f"and {tuple(text_emb.shape)}")
    logits = similarity_logits(image_emb, text_emb, scale)  # (N, N)
    target = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


# ---------------------------------------------------------------- zero-shot classification (chapter 03, Eq. (4)–(5))


def prompts(classname: str, templates: Sequence[str]) -> list[str]:
    """``["a photo of a {}."]`` → ``["a photo of a dog."]``; every template must contain one ``{}`` (chapter 03)."""
    if not templates:
        raise ValueError("templates is empty: give at least one, e.g. ['a photo of a {}.']")
    for t in templates:
        if t.count("{}") != 1:
            raise ValueError(f"template {t!r} must contain exactly one '{{}}' placeholder")
    return [t.format(classname) for t in templates]


@torch.no_grad()
def class_embeddings(encode_text: Callable[[list[str]], torch.Tensor], classnames: Sequence[str],
                     templates: Sequence[str]) -> torch.Tensor:
    """One unit vector per class: the normalised mean of its normalised prompt embeddings (chapter 03, Eq. (5)).

    ``encode_text`` maps a list of ``P`` strings to ``(P, D)`` embeddings. With one template this is plain
    prompting (Eq. (4)); with several it is CLIP's prompt ensembling. Returns ``(K, D)`` float32.
    """
    if not classnames:
        raise ValueError("classnames is empty")
    rows = []
    for name in classnames:
        emb = encode_text(prompts(name, templates))  # (P, D)
        if emb.ndim != 2 or emb.shape[0] != len(templates):
            raise ValueError(f"encode_text returned shape {tuple(emb.shape)} for {len(templates)} prompts")
        rows.append(F.normalize(F.normalize(emb.float(), dim=-1).mean(0), dim=-1))
    return torch.stack(rows)  # (K, D)


def zero_shot_logits(image_emb: torch.Tensor, class_emb: torch.Tensor,
                     scale: torch.Tensor | float = 100.0) -> torch.Tensor:
    """Class logits ``s · cos(image, class)``: ``(N, D), (K, D)`` → ``(N, K)``; argmax is the prediction
    (chapter 03, Eq. (4))."""
    return similarity_logits(image_emb, class_emb, scale)


def retrieval_recall(image_emb: torch.Tensor, text_emb: torch.Tensor, text_to_image: torch.Tensor,
                     ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Recall@K both ways (chapter 03, "Evaluating retrieval").

    ``image_emb`` ``(N, D)``, ``text_emb`` ``(M, D)``, ``text_to_image[m]`` the image caption ``m`` describes.
    Image→text: an image counts as a hit when *any* of its captions is among its ``k`` nearest texts.
    Text→image: a caption counts when its image is among its ``k`` nearest images.
    Returns ``{"i2t_R@1": ..., "t2i_R@1": ..., ...}`` as fractions in ``[0, 1]``.
    """
    n, m = image_emb.shape[0], text_emb.shape[0]
    if text_to_image.is_floating_point() or text_to_image.is_complex() or text_to_image.dtype == torch.bool:
        raise ValueError(f"text_to_image must hold integer image indices, got dtype {text_to_image.dtype}")
    if text_to_image.shape != (m,) or int(text_to_image.min()) < 0 or int(text_to_image.max()) >= n:
        raise ValueError(f"text_to_image must be ({m},) image indices in [0, {n}), got shape "
                         f"{tuple(text_to_image.shape)}")
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive, got {ks}")
    sim = similarity_logits(image_emb, text_emb)  # (N, M)
    owner = text_to_image.to(sim.device)
    match = owner[None, :] == torch.arange(n, device=sim.device)[:, None]  # (N, M) True where caption m is image n's
    out = {}
    for k in ks:
        top_t = sim.topk(min(k, m), dim=1).indices  # (N, k) texts nearest each image
        out[f"i2t_R@{k}"] = match.gather(1, top_t).any(1).float().mean().item()
        top_i = sim.T.topk(min(k, n), dim=1).indices  # (M, k) images nearest each text
        out[f"t2i_R@{k}"] = (top_i == owner[:, None]).any(1).float().mean().item()
    return out
