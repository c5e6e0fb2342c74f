import gzip
import hashlib
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import data

SHARED = Path(os.environ.get("COURSE_DATA", "")) if os.environ.get("COURSE_DATA") else None


def _idx_bytes(array: np.ndarray, header: bytes) -> bytes:
    return gzip.compress(header + array.astype(np.uint8).tobytes())


def _fake_mnist(root: Path, n: int = 6):
    """Write a tiny MNIST-format dataset and return the md5 table the loader should accept."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    files = {
        "t10k-images-idx3-ubyte.gz": _idx_bytes(rng.integers(0, 256, (n, 28, 28)), b"\0" * 16),
        "t10k-labels-idx1-ubyte.gz": _idx_bytes(np.arange(n) % 10, b"\0" * 8),
    }
    for name, blob in files.items():
        (raw / name).write_bytes(blob)
    return {name: hashlib.md5(blob).hexdigest() for name, blob in files.items()}


def test_missing_file_error_names_file_env_and_source(data_dir, no_network):
    with pytest.raises(data.DataMissingError) as err:
        data.load_mnist("test")
    msg = str(err.value)
    assert "t10k-images-idx3-ubyte.gz" in msg and "COURSE_DATA" in msg and str(data_dir) in msg
    assert "https://" in msg and "COURSE_DOWNLOAD=1" in msg


def test_missing_error_is_a_file_not_found_error(data_dir, no_network):
    with pytest.raises(FileNotFoundError):
        data.load_tiny_shakespeare()


def test_checksum_failure_is_reported(data_dir, no_network):
    path = data_dir / "tinyshakespeare" / "input.txt"
    path.parent.mkdir()
    path.write_text("not shakespeare")
    with pytest.raises(data.ChecksumError) as err:
        data.load_tiny_shakespeare()
    assert str(path) in str(err.value) and "6fb458f1232090904fb40fe944165e91" in str(err.value)


def test_idx_parsing_on_a_fake_dataset(data_dir, monkeypatch, no_network):
    monkeypatch.setattr(data, "_MNIST", {**data._MNIST, **_fake_mnist(data_dir)})
    x, y = data.load_mnist("test")
    assert x.shape == (6, 1, 28, 28) and x.dtype == torch.uint8
    assert y.dtype == torch.int64 and y.tolist() == [0, 1, 2, 3, 4, 5]


def test_bad_split_is_a_value_error(data_dir):
    with pytest.raises(ValueError, match="'val'"):
        data.load_mnist("val")


def test_download_when_allowed_uses_the_url_and_checks_md5(data_dir, monkeypatch):
    text = b"To be, or not to be"
    monkeypatch.setattr(data, "_SHAKESPEARE", ("tinyshakespeare/input.txt", hashlib.md5(text).hexdigest(),
                                               "https://example.invalid/input.txt"))
    seen = []

    def fake_urlopen(url, timeout):
        seen.append(url)
        return io.BytesIO(text)

    monkeypatch.setattr(data.urllib.request, "urlopen", fake_urlopen)
    monkeypatch.setenv("COURSE_DOWNLOAD", "1")
    assert data.load_tiny_shakespeare() == text.decode()
    assert seen == ["https://example.invalid/input.txt"]
    assert (data_dir / "tinyshakespeare" / "input.txt").read_bytes() == text


def test_failed_download_is_a_missing_error(data_dir, monkeypatch):
    def offline(url, timeout):
        raise OSError("network unreachable")

    monkeypatch.setattr(data.urllib.request, "urlopen", offline)
    monkeypatch.setenv("COURSE_DOWNLOAD", "1")
    with pytest.raises(data.DataMissingError, match="download failed"):
        data.load_tiny_shakespeare()


def _fake_cifar10_batches(folder: Path) -> dict:
    folder.mkdir(exist_ok=True)
    md5, rng = {}, np.random.default_rng(1)
    for name in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]:
        blob = pickle.dumps({"data": rng.integers(0, 256, (3, 3072), dtype=np.uint8), "labels": [1, 2, 3]})
        (folder / name).write_bytes(blob)
        md5[name] = hashlib.md5(blob).hexdigest()
    return md5


def test_a_wrong_download_is_not_kept_and_the_next_run_downloads_again(data_dir, monkeypatch):
    good = b"To be, or not to be"
    monkeypatch.setattr(data, "_SHAKESPEARE", ("tinyshakespeare/input.txt", hashlib.md5(good).hexdigest(),
                                               "https://example.invalid/input.txt"))
    answers = [b"<html>rate limited</html>", good]
    monkeypatch.setattr(data.urllib.request, "urlopen", lambda url, timeout: io.BytesIO(answers.pop(0)))
    monkeypatch.setenv("COURSE_DOWNLOAD", "1")
    with pytest.raises(data.ChecksumError, match="example.invalid"):
        data.load_tiny_shakespeare()
    assert list((data_dir / "tinyshakespeare").iterdir()) == []   # neither the file nor a temporary left behind
    assert data.load_tiny_shakespeare() == good.decode()


def test_a_connection_cut_mid_download_is_a_missing_error(data_dir, monkeypatch):
    import http.client

    class Cut(io.BytesIO):
        def read(self, *args):
            raise http.client.IncompleteRead(b"To be", 100)   # not an OSError

    monkeypatch.setattr(data.urllib.request, "urlopen", lambda url, timeout: Cut())
    monkeypatch.setenv("COURSE_DOWNLOAD", "1")
    with pytest.raises(data.DataMissingError, match="download failed.*IncompleteRead"):
        data.load_tiny_shakespeare()
    assert list((data_dir / "tinyshakespeare").iterdir()) == []


def test_cifar10_half_extracted_is_downloaded_again_when_allowed(data_dir, monkeypatch, no_network):
    folder = data_dir / "cifar-10-batches-py"
    monkeypatch.setattr(data, "_CIFAR10_MD5", _fake_cifar10_batches(folder))
    (folder / "data_batch_4").unlink()                          # a runtime died during extraction
    with pytest.raises(data.DataMissingError, match="data_batch_4"):
        data.load_cifar10("train")                              # downloads off: say what is missing
    calls = []
    monkeypatch.setattr(data, "_torchvision_download", lambda name: (calls.append(name),
                                                                    _fake_cifar10_batches(folder)))
    monkeypatch.setenv("COURSE_DOWNLOAD", "1")
    x, _ = data.load_cifar10("train")
    assert calls == ["CIFAR10"] and x.shape == (15, 3, 32, 32)
    data.load_cifar10("train")
    assert calls == ["CIFAR10"]                                 # complete now: no second download


def test_cifar10_missing_names_both_layouts(data_dir, no_network):
    with pytest.raises(data.DataMissingError) as err:
        data.load_cifar10("train")
    assert "cifar-10-batches-py" in str(err.value) and "cifar10-jpeg.tar.gz" in str(err.value)


def test_cifar10_official_layout(data_dir, monkeypatch, no_network):
    folder = data_dir / "cifar-10-batches-py"
    monkeypatch.setattr(data, "_CIFAR10_MD5", _fake_cifar10_batches(folder))
    x, y = data.load_cifar10("train")
    assert x.shape == (15, 3, 32, 32) and x.dtype == torch.uint8 and y.tolist() == [1, 2, 3] * 5
    # channel-first reshape: first row of the red plane is the first 32 bytes of the record
    first = pickle.loads((folder / "data_batch_1").read_bytes())["data"][0]
    assert torch.equal(x[0, 0, 0], torch.from_numpy(first[:32].copy()))
    (folder / "test_batch").write_bytes(b"corrupt")
    with pytest.raises(data.ChecksumError, match="test_batch"):
        data.load_cifar10("test")


def test_cifar10_jpeg_copy_is_announced_decoded_and_cached(data_dir, monkeypatch, capsys, no_network):
    from PIL import Image

    tar_path = data_dir / "cifar10-jpeg" / "cifar10-jpeg.tar.gz"
    tar_path.parent.mkdir()
    with tarfile.open(tar_path, "w:gz") as tar:
        for split, cls, colour in [("train", "cat", (250, 0, 0)), ("train", "ship", (0, 0, 250)),
                                   ("test", "dog", (0, 250, 0))]:
            buf = io.BytesIO()
            Image.new("RGB", (32, 32), colour).save(buf, format="JPEG", quality=95)
            info = tarfile.TarInfo(f"{split}/{cls}/0000.jpg")
            info.size = len(buf.getvalue())
            tar.addfile(info, io.BytesIO(buf.getvalue()))
    monkeypatch.setattr(data, "_CIFAR10_JPEG", (data._CIFAR10_JPEG[0], data.md5sum(tar_path)))
    x, y = data.load_cifar10("train")
    assert "JPEG" in capsys.readouterr().out
    assert x.shape == (2, 3, 32, 32) and sorted(y.tolist()) == [3, 8]  # cat, ship
    red = x[y == 3][0].float().mean(dim=(1, 2))
    assert red[0] > 200 and red[2] < 50

    def no_second_decode(path):
        raise AssertionError(f"{path} was read again: the decoded cache was not used")

    with monkeypatch.context() as m:
        m.setattr(data, "md5sum", no_second_decode)
        x2, y2 = data.load_cifar10("train")                   # answered by the cache
    assert torch.equal(x2, x) and torch.equal(y2, y)
    xt, yt = data.load_cifar10("test")                        # the cache is per split
    assert yt.tolist() == [5] and xt.shape == (1, 3, 32, 32)  # dog
    tar_path.unlink()  # now only the cache can answer
    with pytest.raises(data.DataMissingError):
        data.load_cifar10("train")  # missing source data is never hidden by a cache


@pytest.mark.skipif(SHARED is None or not (SHARED / "MNIST").exists(), reason="real data not present")
def test_real_mnist_matches_published_counts():
    x, y = data.load_mnist("test")
    assert x.shape == (10000, 1, 28, 28)
    assert y.bincount().tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    xf, yf = data.load_fashion_mnist("train")
    assert xf.shape == (60000, 1, 28, 28) and yf.bincount().tolist() == [6000] * 10


@pytest.mark.skipif(SHARED is None or not (SHARED / "MNIST").exists() or not (SHARED / "FashionMNIST").exists(),
                    reason="real data not present")
def test_real_mnist_images_equal_torchvisions_reader(tmp_path):
    """Pixel content, not just shapes: torchvision's idx reader (on the decompressed file) gives the same
    images, and the picture is upright — the mean digit 1 and the mean trouser are vertical strokes."""
    from torchvision.datasets.mnist import read_image_file

    for load, folder, upright_class in ((data.load_mnist, "MNIST", 1), (data.load_fashion_mnist, "FashionMNIST", 1)):
        x, y = load("test")
        raw = tmp_path / f"{folder}-t10k-images-idx3-ubyte"
        raw.write_bytes(gzip.decompress((SHARED / folder / "raw" / "t10k-images-idx3-ubyte.gz").read_bytes()))
        assert torch.equal(x[:, 0], read_image_file(str(raw)))
        mean = x[y == upright_class].float().mean(0)[0]  # (28, 28)
        assert mean.mean(0).std() > 2 * mean.mean(1).std()  # intensity varies across columns, not rows


def _fake_cifar100(root: Path, fine: list, coarse: list) -> tuple[Path, np.ndarray]:
    path = root / "cifar-100-python" / "train"
    path.parent.mkdir(parents=True)
    pixels = (np.arange(len(fine) * 3072) * 7 % 251).astype(np.uint8).reshape(len(fine), 3072)
    path.write_bytes(pickle.dumps({"data": pixels, "fine_labels": fine, "coarse_labels": coarse}))
    return path, pixels


def test_cifar100_uses_fine_labels_and_checks_its_files(data_dir, monkeypatch, no_network):
    with pytest.raises(data.DataMissingError, match="cifar-100-python"):
        data.load_cifar100("train")
    path, pixels = _fake_cifar100(data_dir, fine=[17, 3, 99], coarse=[1, 2, 3])
    with pytest.raises(data.ChecksumError, match="wrong MD5"):
        data.load_cifar100("train")
    monkeypatch.setitem(data._CIFAR100_MD5, "train", data.md5sum(path))
    x, y = data.load_cifar100("train")
    assert x.shape == (3, 3, 32, 32) and x.dtype == torch.uint8
    assert y.tolist() == [17, 3, 99] and y.dtype == torch.int64           # the 100 fine classes, not the 20 coarse
    assert torch.equal(x.reshape(3, -1), torch.from_numpy(pixels))        # the official row-major (N, 3, 32, 32)
