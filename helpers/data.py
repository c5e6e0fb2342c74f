"""Datasets as uint8 tensors, read from ``$COURSE_DATA`` with checksums (chapter 00, "Data").

Every loader returns ``(images, labels)``: images ``uint8`` shaped ``(N, C, H, W)`` and labels
``int64`` shaped ``(N,)`` (text: one ``str``). Files are looked up under :func:`data_root`.
When a file is missing the loader raises :class:`DataMissingError`, naming the file, ``COURSE_DATA``
and where to download it; it downloads only when ``COURSE_DOWNLOAD=1`` (the Colab set-up cell sets it).
It never falls back silently to other data. The one documented substitute — the JPEG copy of
CIFAR-10 used when the official release is absent — is announced with a printed notice.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import os
import pickle
import tarfile
import tempfile
import urllib.request
from pathlib import Path

import numpy as np
import torch

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")
SPLITS = ("train", "test")


class DataMissingError(FileNotFoundError):
    """A dataset file is not where the course looks for it (and downloading is off or failed; chapter 00)."""


class ChecksumError(RuntimeError):
    """A dataset file exists but its MD5 differs from the official one (corrupt or a different file; chapter 00)."""


def data_root() -> Path:
    """``$COURSE_DATA`` if set, else ``~/.cache/seminar-to-code/data`` (chapter 00)."""
    env = os.environ.get("COURSE_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "seminar-to-code" / "data"


def cache_root() -> Path:
    """Where derived files (decoded images) are cached: ``$COURSE_CACHE`` or ``~/.cache/seminar-to-code/cache``
    (chapter 00).

    Kept apart from :func:`data_root`, which may be read-only.
    """
    env = os.environ.get("COURSE_CACHE")
    path = Path(env).expanduser() if env else Path.home() / ".cache" / "seminar-to-code" / "cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


def download_allowed() -> bool:
    """True when ``COURSE_DOWNLOAD=1`` (set by the Colab set-up cell; chapter 00)."""
    return os.environ.get("COURSE_DOWNLOAD", "0") == "1"


# What a download can raise besides the course's own errors: network and file errors (OSError, which
# includes urllib's URLError), a connection cut mid-transfer (http.client's IncompleteRead), a truncated
# archive (tarfile, EOFError), and torchvision's "File not found or corrupted." (RuntimeError).
DOWNLOAD_ERRORS = (OSError, http.client.HTTPException, tarfile.TarError, EOFError, RuntimeError)


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    """The hex MD5 of a file (chapter 00)."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def missing_error(path: Path, url: str, what: str, hint: str | None = None) -> DataMissingError:
    """The one error for a missing dataset file: names the file, ``COURSE_DATA`` and where to get it.

    ``hint`` replaces the default last line ("download it from ``url``, or set COURSE_DOWNLOAD=1") for
    datasets the course cannot download itself. Every loader (chapters 00, 03, 07) raises this.
    """
    how = hint or f"Download it from {url} into that folder, or set COURSE_DOWNLOAD=1 to let the course download it."
    return DataMissingError(
        f"{what}: file not found: {path}\n"
        f"  COURSE_DATA={os.environ.get('COURSE_DATA', '(unset)')} (data root: {data_root()}).\n"
        f"  {how}"
    )


def fetch(relpath: str, md5: str, url: str, what: str) -> Path:
    """Return ``data_root()/relpath`` after checking its MD5; download it first if allowed (chapter 00).

    Raises :class:`DataMissingError` (missing, download off or failed) or :class:`ChecksumError`.
    """
    path = data_root() / relpath
    if not path.exists():
        if not download_allowed():
            raise missing_error(path, url, what)
        tmp_name = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with urllib.request.urlopen(url, timeout=60) as response, tempfile.NamedTemporaryFile(
                dir=path.parent, delete=False, suffix=".part"
            ) as tmp:
                tmp_name = tmp.name
                tmp.write(response.read())
            actual = md5sum(Path(tmp_name))
            if actual != md5:  # a wrong download never reaches `path`, so the next run downloads again
                raise ChecksumError(f"{what}: the download from {url} has MD5 {actual}, expected {md5}; "
                                    f"nothing was saved.")
            os.replace(tmp_name, path)
            tmp_name = None
        except ChecksumError:
            raise
        except DOWNLOAD_ERRORS as err:
            raise missing_error(path, url, f"{what} (download failed: {err!r})") from err
        finally:
            if tmp_name is not None:
                Path(tmp_name).unlink(missing_ok=True)
    actual = md5sum(path)
    if actual != md5:
        raise ChecksumError(f"{what}: {path} has MD5 {actual}, expected {md5}. Delete it and fetch it again.")
    return path


# ---------------------------------------------------------------- MNIST and Fashion-MNIST (idx .gz)

_MNIST = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
_FASHION = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
_MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"


def _read_idx(path: Path, offset: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=offset)


def _load_idx_pair(folder: str, files: dict, url: str, name: str, split: str):
    _check_split(split)
    prefix = "train" if split == "train" else "t10k"
    img_name, lbl_name = f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-labels-idx1-ubyte.gz"
    img = fetch(f"{folder}/raw/{img_name}", files[img_name], url + img_name, name)
    lbl = fetch(f"{folder}/raw/{lbl_name}", files[lbl_name], url + lbl_name, name)
    x = torch.from_numpy(_read_idx(img, 16).reshape(-1, 1, 28, 28).copy())
    y = torch.from_numpy(_read_idx(lbl, 8).astype(np.int64))
    return x, y


def load_mnist(split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST digits: ``(N, 1, 28, 28)`` uint8 and ``(N,)`` int64 labels (LeCun et al. 1998; chapter 00)."""
    return _load_idx_pair("MNIST", _MNIST, _MNIST_URL, "MNIST", split)


def load_fashion_mnist(split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST: ``(N, 1, 28, 28)`` uint8 and ``(N,)`` int64 labels (Xiao et al. 2017; chapter 00)."""
    return _load_idx_pair("FashionMNIST", _FASHION, _FASHION_URL, "Fashion-MNIST", split)


# ---------------------------------------------------------------- CIFAR-10 / CIFAR-100

_CIFAR10_DIR = "cifar-10-batches-py"
_CIFAR10_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
_CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
_CIFAR10_JPEG = ("cifar10-jpeg/cifar10-jpeg.tar.gz", "0d11abded7da73ed95b60c470137a5e6")
_CIFAR100_DIR = "cifar-100-python"
_CIFAR100_MD5 = {"train": "16019d7e3df5f24257cddd939b257f8d", "test": "f0ef6b0ae62326f3e7ffdfab6717acfc"}
_CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")


def _cifar_arrays(entries: list[dict], label_key: str):
    x = np.concatenate([e["data"] for e in entries]).reshape(-1, 3, 32, 32)
    y = np.concatenate([np.asarray(e[label_key], dtype=np.int64) for e in entries])
    return torch.from_numpy(x.copy()), torch.from_numpy(y)


def _torchvision_download(cls_name: str) -> None:
    import torchvision

    getattr(torchvision.datasets, cls_name)(str(data_root()), download=True)


def load_cifar10(split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10: ``(N, 3, 32, 32)`` uint8 and ``(N,)`` int64 labels (Krizhevsky 2009; chapter 00).

    Looks for, in order: torchvision's official layout ``cifar-10-batches-py/`` (MD5-checked); the
    JPEG re-encoding ``cifar10-jpeg/cifar10-jpeg.tar.gz`` (prints a notice: it is lossy, so accuracy
    lands a little below published numbers); a torchvision download when ``COURSE_DOWNLOAD=1``.
    """
    _check_split(split)
    root = data_root()
    official = root / _CIFAR10_DIR
    jpeg = root / _CIFAR10_JPEG[0]
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    # Download when allowed and the official files are absent (and no JPEG copy stands in) or incomplete, e.g.
    # after a runtime died mid-extraction; torchvision checks the archive's MD5 and extracts it again.
    complete = lambda: all((official / n).exists() and md5sum(official / n) == _CIFAR10_MD5[n] for n in names)
    if download_allowed() and (official.exists() or not jpeg.exists()) and not complete():
        try:
            _torchvision_download("CIFAR10")
        except DOWNLOAD_ERRORS as err:
            raise missing_error(official, _CIFAR10_URL, f"CIFAR-10 (download failed: {err!r})") from err
    if official.exists():
        for n in names:
            if not (official / n).exists():
                raise missing_error(official / n, _CIFAR10_URL, "CIFAR-10")
            if md5sum(official / n) != _CIFAR10_MD5[n]:
                raise ChecksumError(f"CIFAR-10: {official / n} has the wrong MD5 (expected {_CIFAR10_MD5[n]})")
        return _cifar_arrays([_unpickle(official / n) for n in names], "labels")
    if jpeg.exists():
        print(f"Note: using the JPEG re-encoded CIFAR-10 copy {jpeg} (lossy; the official release is absent).")
        return _cifar10_from_jpeg(jpeg, split)
    raise DataMissingError(
        f"CIFAR-10: neither {official}/ (the official release) nor {jpeg} (the JPEG copy) exists.\n"
        f"  COURSE_DATA={os.environ.get('COURSE_DATA', '(unset)')} (data root: {root}).\n"
        f"  Download {_CIFAR10_URL} and extract it there, or set COURSE_DOWNLOAD=1 to let the course download it."
    )


def _cifar10_from_jpeg(tar_path: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode the JPEG copy once and cache the decoded tensors (atomically) under :func:`cache_root`."""
    expected = _CIFAR10_JPEG[1]
    cached = cache_root() / f"cifar10-jpeg-{expected[:8]}-{split}.pt"
    if cached.exists():
        blob = torch.load(cached, weights_only=True)
        return blob["x"], blob["y"]
    actual = md5sum(tar_path)
    if actual != expected:
        raise ChecksumError(f"CIFAR-10 JPEG copy: {tar_path} has MD5 {actual}, expected {expected}")
    from PIL import Image

    images, labels = [], []
    with tarfile.open(tar_path, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) != 3 or parts[0] != split or not parts[2].endswith(".jpg"):
                continue
            raw = tar.extractfile(member).read()
            images.append(np.asarray(Image.open(io.BytesIO(raw)).convert("RGB")))
            labels.append(CIFAR10_CLASSES.index(parts[1]))
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    y = torch.tensor(labels, dtype=torch.int64)
    with tempfile.NamedTemporaryFile(dir=cached.parent, delete=False, suffix=".tmp") as tmp:
        torch.save({"x": x, "y": y}, tmp.name)
    os.replace(tmp.name, cached)
    return x, y


def load_cifar100(split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-100 (fine labels): ``(N, 3, 32, 32)`` uint8 and ``(N,)`` int64 (official layout only).

    Used by the optional CIFAR-100 configurations (chapters 01 and 02); downloads when ``COURSE_DOWNLOAD=1``.
    """
    _check_split(split)
    path = data_root() / _CIFAR100_DIR / split
    if download_allowed() and not (path.exists() and md5sum(path) == _CIFAR100_MD5[split]):
        try:  # absent, or left incomplete by an interrupted extraction: torchvision fetches and extracts again
            _torchvision_download("CIFAR100")
        except DOWNLOAD_ERRORS as err:
            raise missing_error(path, _CIFAR100_URL, f"CIFAR-100 (download failed: {err!r})") from err
    if not path.exists():
        raise missing_error(path, _CIFAR100_URL, "CIFAR-100")
    if md5sum(path) != _CIFAR100_MD5[split]:
        raise ChecksumError(f"CIFAR-100: {path} has the wrong MD5 (expected {_CIFAR100_MD5[split]})")
    return _cifar_arrays([_unpickle(path)], "fine_labels")


# ---------------------------------------------------------------- Tiny Shakespeare

_SHAKESPEARE = (
    "tinyshakespeare/input.txt",
    "6fb458f1232090904fb40fe944165e91",
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
)


def load_tiny_shakespeare() -> str:
    """The Tiny Shakespeare corpus (1,115,394 characters) as one string (chapter 04)."""
    path = fetch(*_SHAKESPEARE, what="Tiny Shakespeare")
    return path.read_text(encoding="utf-8")
