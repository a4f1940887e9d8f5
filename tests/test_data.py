"""Dataset loaders: deterministic splits, train-only normalisation, and torchvision formats read offline."""

from __future__ import annotations

import os
import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from searchcore.errors import UsageError
from searchcore.train import data


@pytest.fixture(autouse=True)
def _fresh_cache():
    data.clear_cache()
    yield
    data.clear_cache()


def _assert_one_line(exc: pytest.ExceptionInfo, *parts: str) -> None:
    message = str(exc.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, (part, message)


# --- digits --------------------------------------------------------------------------------


def test_digits_sizes_types_and_shape():
    s = data.load_digits(None, None, False, 0, 0.15, 0.15)
    assert (len(s.train_x), len(s.val_x), len(s.test_x)) == (1257, 270, 270)
    assert s.input_shape == [1, 8, 8] and s.classes == 10 and s.name == "digits"
    for x, y in ((s.train_x, s.train_y), (s.val_x, s.val_y), (s.test_x, s.test_y)):
        assert x.dtype == torch.float32 and y.dtype == torch.int64 and len(x) == len(y)
    assert abs(s.train_x.mean().item()) < 1e-4 and abs(s.train_x.std().item() - 1) < 1e-3
    # val/test use the train statistics, so they are only roughly standardised
    assert abs(s.val_x.mean().item()) < 0.2 and abs(s.val_x.std().item() - 1) < 0.2


def test_digits_splits_partition_the_dataset():
    s = data.load_digits(None, None, False, 3, 0.2, 0.1)
    everything = torch.cat([s.train_x, s.val_x, s.test_x]).reshape(-1, 64)
    # the map raw -> normalised is affine and raw pixels span 0..16, so it can be inverted exactly
    low, high = everything.min(), everything.max()
    raw = torch.round((everything - low) / (high - low) * 16).to(torch.int64)
    labels = torch.cat([s.train_y, s.val_y, s.test_y])
    digits = load_digits()
    original = sorted(zip(map(tuple, digits.data.astype(np.int64).tolist()), digits.target.tolist(), strict=True))
    got = sorted(zip(map(tuple, raw.tolist()), labels.tolist(), strict=True))
    assert got == original


def test_digits_same_seed_same_splits_other_seed_other_splits():
    a = data.load_digits(None, None, False, 7, 0.15, 0.15)
    b = data.load_digits(None, None, False, 7, 0.15, 0.15)
    c = data.load_digits(None, None, False, 8, 0.15, 0.15)
    for f in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y"):
        assert torch.equal(getattr(a, f), getattr(b, f))
    assert not torch.equal(a.val_y, c.val_y)


def test_to_keeps_metadata():
    s = data.load_digits(None, None, False, 0, 0.15, 0.15)
    moved = s.to("cpu")
    assert moved.name == "digits" and moved.classes == 10 and moved.input_shape == [1, 8, 8]
    assert torch.equal(moved.test_x, s.test_x)


@pytest.mark.parametrize(
    ("val", "test", "word"), [(0.0, 0.1, "val_fraction"), (0.5, -0.1, "test_fraction"), (0.6, 0.5, "< 1")]
)
def test_bad_fractions(val, test, word):
    with pytest.raises(UsageError) as exc:
        data.load_digits(None, None, False, 0, val, test)
    _assert_one_line(exc, "digits", word)


def test_digits_takes_no_argument():
    with pytest.raises(UsageError) as exc:
        data.load_digits("extra", None, False, 0, 0.1, 0.1)
    _assert_one_line(exc, "digits", "no argument")


def test_register_builtin_and_cache():
    registered = {}
    data.register_builtin(lambda name, loader: registered.setdefault(name, loader))
    assert sorted(registered) == ["cifar10", "digits", "fashion-mnist", "imagefolder", "mnist"]
    first = registered["digits"](None, None, False, 0, 0.15, 0.15)
    second = registered["digits"](None, None, False, 0, 0.15, 0.15)
    assert first is not second and first.train_x is second.train_x  # cached tensors, fresh object


# --- MNIST and Fashion-MNIST in their raw idx format ----------------------------------------


def _write_idx(path: str, array: np.ndarray) -> None:
    """The big-endian idx-ubyte format: magic (type 0x08 = uint8, number of dims), dims, bytes."""
    with open(path, "wb") as f:
        f.write(struct.pack(">I", 0x0800 | array.ndim))
        f.write(struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.astype(np.uint8).tobytes())


def _mnist_images(n: int, offset: int) -> np.ndarray:
    rng = np.random.default_rng(offset)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    images[:, 0, 0] = np.arange(offset, offset + n)  # a unique id per image
    return images


def _fake_mnist(root, folder: str, n_train: int = 60, n_test: int = 20) -> np.ndarray:
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    _write_idx(str(raw / "train-images-idx3-ubyte"), _mnist_images(n_train, 0))
    _write_idx(str(raw / "train-labels-idx1-ubyte"), np.arange(n_train) % 10)
    test_labels = (np.arange(n_test) * 3) % 10
    _write_idx(str(raw / "t10k-images-idx3-ubyte"), _mnist_images(n_test, 100))
    _write_idx(str(raw / "t10k-labels-idx1-ubyte"), test_labels)
    return test_labels


@pytest.mark.parametrize(("name", "folder"), [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_mnist_like_from_raw_files(tmp_path, name, folder):
    test_labels = _fake_mnist(tmp_path, folder)
    s = data.BUILTIN[name](None, str(tmp_path), False, 0, 0.2, 0.5)
    assert s.name == name and s.classes == 10 and s.input_shape == [1, 28, 28]
    # val comes out of the official train split; the official test split is kept whole (test_fraction unused)
    assert (len(s.train_x), len(s.val_x), len(s.test_x)) == (48, 12, 20)
    assert torch.equal(s.test_y, torch.as_tensor(test_labels, dtype=torch.int64))
    ids = {split: set(getattr(s, split)[:, 0, 0, 0].tolist()) for split in ("train_x", "val_x", "test_x")}
    assert len(ids["train_x"]) == 48 and len(ids["val_x"]) == 12
    assert not ids["train_x"] & ids["val_x"] and not ids["test_x"] & (ids["train_x"] | ids["val_x"])
    assert abs(s.train_x.mean().item()) < 1e-4
    again = data.BUILTIN[name](None, str(tmp_path), False, 0, 0.2, 0.5)
    assert torch.equal(again.val_x, s.val_x)
    other = data.BUILTIN[name](None, str(tmp_path), False, 1, 0.2, 0.5)
    assert not torch.equal(other.val_y, s.val_y)


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "cifar10"])
def test_missing_files_without_download(tmp_path, name):
    root = tmp_path / "nowhere"
    with pytest.raises(UsageError) as exc:
        data.BUILTIN[name](None, str(root), False, 0, 0.1, 0.1)
    _assert_one_line(exc, repr(name), str(root), "--download")


# --- CIFAR-10 as pickled batches ------------------------------------------------------------


def _fake_cifar(root, per_batch: int = 6, n_test: int = 10) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def batch(n: int, first_id: int) -> dict:
        images = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
        images[:, 0, 0, 0] = np.arange(first_id, first_id + n)
        return {"data": images.reshape(n, 3072), "labels": [(first_id + i) % 10 for i in range(n)]}

    for b in range(5):
        with open(folder / f"data_batch_{b + 1}", "wb") as f:
            pickle.dump(batch(per_batch, b * per_batch), f)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(batch(n_test, 200), f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)


@pytest.fixture
def skip_cifar_md5(monkeypatch):
    """Fake batches cannot match the published md5 sums, so check that the files exist but not their checksum."""
    import torchvision.datasets.cifar as cifar

    monkeypatch.setattr(cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))


def test_cifar10_from_pickled_batches(tmp_path, skip_cifar_md5):
    _fake_cifar(tmp_path)
    s = data.load_cifar10(None, str(tmp_path), False, 0, 0.2, 0.0)
    assert s.name == "cifar10" and s.classes == 10 and s.input_shape == [3, 32, 32]
    assert (len(s.train_x), len(s.val_x), len(s.test_x)) == (24, 6, 10)
    assert s.train_y.dtype == torch.int64 and s.test_y.tolist() == [(200 + i) % 10 for i in range(10)]
    ids_train, ids_val = set(s.train_x[:, 0, 0, 0].tolist()), set(s.val_x[:, 0, 0, 0].tolist())
    assert len(ids_train) == 24 and len(ids_val) == 6 and not ids_train & ids_val
    per_channel = s.train_x.mean(dim=(0, 2, 3))
    assert torch.allclose(per_channel, torch.zeros(3), atol=1e-4)


def test_cifar10_checksum_mismatch_is_reported(tmp_path):
    _fake_cifar(tmp_path)  # real md5 check: the fake batches are refused as corrupted
    with pytest.raises(UsageError) as exc:
        data.load_cifar10(None, str(tmp_path), False, 0, 0.2, 0.0)
    _assert_one_line(exc, "cifar10", "corrupted", str(tmp_path))


# --- imagefolder --------------------------------------------------------------------------


def _image_folder(root) -> None:
    """Three classes of four solid images each, in assorted sizes and modes, each with its own red value."""
    sizes, modes = [(10, 12), (40, 40), (32, 32), (7, 50)], ["RGB", "L", "RGBA", "RGB"]
    for c, cls in enumerate(["cat", "dog", "owl"]):
        (root / cls).mkdir(parents=True)
        for i, (size, mode) in enumerate(zip(sizes, modes, strict=True)):
            red = 20 * (4 * c + i) + 5
            colour = red if mode == "L" else (red, 90, 200, 255)[: len(mode)]
            Image.new(mode, size, colour).save(root / cls / f"{i}.png")


def test_imagefolder_from_pngs(tmp_path):
    _image_folder(tmp_path / "pics")
    s = data.load_imagefolder(str(tmp_path / "pics"), None, False, 0, 0.25, 0.25)
    assert s.name == "imagefolder" and s.classes == 3
    assert s.input_shape == [3, data.IMAGEFOLDER_SIZE, data.IMAGEFOLDER_SIZE]
    assert (len(s.train_x), len(s.val_x), len(s.test_x)) == (6, 3, 3)
    reds = [set(x[:, 0, 0, 0].tolist()) for x in (s.train_x, s.val_x, s.test_x)]
    assert sum(len(r) for r in reds) == 12 and len(set().union(*reds)) == 12
    assert sorted(torch.cat([s.train_y, s.val_y, s.test_y]).tolist()) == [0] * 4 + [1] * 4 + [2] * 4
    again = data.load_imagefolder(str(tmp_path / "pics"), None, False, 0, 0.25, 0.25)
    assert torch.equal(again.test_x, s.test_x)


@pytest.mark.parametrize("layout", ["missing", "file", "empty", "classes-without-images"])
def test_imagefolder_bad_path(tmp_path, layout):
    path = tmp_path / "pics"
    if layout == "file":
        path.write_text("not a folder")
    elif layout == "empty":
        path.mkdir()
    elif layout == "classes-without-images":
        (path / "cat").mkdir(parents=True)
        (path / "cat" / "notes.txt").write_text("no image here")
    with pytest.raises(UsageError) as exc:
        data.load_imagefolder(str(path), None, False, 0, 0.2, 0.2)
    _assert_one_line(exc, "imagefolder", str(path))


def test_imagefolder_needs_a_path():
    with pytest.raises(UsageError) as exc:
        data.load_imagefolder(None, None, False, 0, 0.2, 0.2)
    _assert_one_line(exc, "imagefolder:PATH")
