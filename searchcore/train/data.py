"""Datasets as whole tensors: small image datasets fit in memory, so a trial never waits on a DataLoader.

Every loader has the same signature ``loader(arg, root, download, seed, val_fraction, test_fraction)``
and returns :class:`Splits`: float32 ``N,C,H,W`` images normalised with the *train* split's
per-channel mean and std (so no statistics leak from val/test), and int64 labels. Splits are
deterministic in ``seed`` (a seeded ``torch.Generator`` permutation). The test split is meant
only for final reports; searching looks at val.

Loaded splits are cached per process (keyed by every argument), so the trials a worker runs
one after another share one copy. The tensors are read-only by convention: never edit them in place.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from searchcore.errors import UsageError

DEFAULT_ROOT = os.path.join("~", ".cache", "searchcore", "data")
IMAGEFOLDER_SIZE = 32  # side of the square every imagefolder image is resized to
CACHE_SIZE = 4  # loaded Splits kept per process; CIFAR-10 alone is ~0.7 GB as float32

Loader = Callable[[str | None, str | None, bool, int, float, float], "Splits"]


@dataclass
class Splits:
    """Train/val/test tensors of one dataset, plus what a model builder needs to know about it."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: int
    name: str

    @property
    def input_shape(self) -> list[int]:
        """``[C, H, W]`` of one example, the shape a backbone is built for."""
        return [int(d) for d in self.train_x.shape[1:]]

    def to(self, device: torch.device | str) -> Splits:
        """The same splits on ``device`` (the tensors are shared when they are already there)."""
        moved = {f: getattr(self, f).to(device) for f in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")}
        return Splits(**moved, classes=self.classes, name=self.name)


# --- helpers -------------------------------------------------------------------------------


def _resolve_root(root: str | None) -> str:
    return os.path.abspath(os.path.expanduser(root or DEFAULT_ROOT))


def _check_fractions(name: str, val_fraction: float, test_fraction: float) -> None:
    if not 0.0 < val_fraction < 1.0:
        raise UsageError(f"dataset {name!r}: val_fraction must be in (0, 1), got {val_fraction}")
    if not 0.0 <= test_fraction < 1.0:
        raise UsageError(f"dataset {name!r}: test_fraction must be in [0, 1), got {test_fraction}")
    if val_fraction + test_fraction >= 1.0:
        raise UsageError(
            f"dataset {name!r}: val_fraction + test_fraction must be < 1, got {val_fraction} + {test_fraction}"
        )


def _no_arg(name: str, arg: str | None) -> None:
    if arg:
        raise UsageError(f"dataset {name!r} takes no argument, got {name}:{arg}")


def _count(n: int, fraction: float) -> int:
    """Examples a fraction of ``n`` gets: at least one whenever the fraction is positive."""
    return max(1, round(n * fraction)) if fraction > 0 else 0


def _permutation(n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=gen)


def _to_float(images: torch.Tensor, scale: float) -> torch.Tensor:
    """uint8/float images in ``N,C,H,W`` to float32 in [0, 1]."""
    return images.to(torch.float32).div_(scale)


def _normalise(train_x: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """Normalise every tensor with the train split's per-channel mean and std."""
    mean = train_x.mean(dim=(0, 2, 3), keepdim=True)
    std = train_x.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    return [((t - mean) / std).contiguous() for t in (train_x, *others)]


def _split_all(
    name: str, x: torch.Tensor, y: torch.Tensor, classes: int, seed: int, val_fraction: float, test_fraction: float
) -> Splits:
    """Carve train/val/test out of one pool of ``[0, 1]`` images."""
    n = len(x)
    n_val, n_test = _count(n, val_fraction), _count(n, test_fraction)
    if n - n_val - n_test < 1:
        raise UsageError(f"dataset {name!r}: {n} examples are too few for a train/val/test split")
    perm = _permutation(n, seed)
    test_i, val_i, train_i = perm[:n_test], perm[n_test : n_test + n_val], perm[n_test + n_val :]
    train_x, val_x, test_x = _normalise(x[train_i], x[val_i], x[test_i])
    return Splits(train_x, y[train_i], val_x, y[val_i], test_x, y[test_i], classes, name)


def _split_train(
    name: str,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    classes: int,
    seed: int,
    val_fraction: float,
) -> Splits:
    """Carve val out of an official train split; the official test split stays the test split."""
    x, y = train
    n = len(x)
    n_val = _count(n, val_fraction)
    if n - n_val < 1:
        raise UsageError(f"dataset {name!r}: {n} training examples are too few to carve a val split from")
    perm = _permutation(n, seed)
    val_i, train_i = perm[:n_val], perm[n_val:]
    train_x, val_x, test_x = _normalise(x[train_i], x[val_i], test[0])
    return Splits(train_x, y[train_i], val_x, y[val_i], test_x, test[1].to(torch.int64), classes, name)


# --- loaders -------------------------------------------------------------------------------


def load_digits(
    arg: str | None, root: str | None, download: bool, seed: int, val_fraction: float, test_fraction: float
) -> Splits:
    """scikit-learn's bundled 8x8 digits: 1797 images, 10 classes, no files or network needed."""
    from sklearn.datasets import load_digits as sk_digits

    _no_arg("digits", arg)
    _check_fractions("digits", val_fraction, test_fraction)
    bunch = sk_digits()
    x = _to_float(torch.as_tensor(bunch.images).reshape(-1, 1, 8, 8), 16.0)
    y = torch.as_tensor(bunch.target, dtype=torch.int64)
    return _split_all("digits", x, y, 10, seed, val_fraction, test_fraction)


def _torchvision_sets(name: str, cls_name: str, root: str, download: bool) -> tuple[Any, Any]:
    """The official train and test sets, with every failure turned into one actionable line."""
    import torchvision.datasets as tvd

    cls = getattr(tvd, cls_name)
    try:
        return cls(root, train=True, download=download), cls(root, train=False, download=download)
    except (RuntimeError, OSError) as exc:
        if download:
            reason = " ".join(str(exc).split())[:200]
            raise UsageError(
                f"dataset {name!r}: download to {root} failed ({reason}); "
                f"check the network or put the files under {root}"
            ) from None
        raise UsageError(
            f"dataset {name!r}: files not found (or corrupted) under {root}; pass --download or put the files under {root}"
        ) from None


def _mnist_like(name: str, cls_name: str) -> Loader:
    def load(
        arg: str | None, root: str | None, download: bool, seed: int, val_fraction: float, test_fraction: float
    ) -> Splits:
        _no_arg(name, arg)
        _check_fractions(name, val_fraction, 0.0)
        train, test = _torchvision_sets(name, cls_name, _resolve_root(root), download)
        # ``data`` is a uint8 N,H,W tensor read straight from the idx files
        tx, vx = (_to_float(ds.data.unsqueeze(1), 255.0) for ds in (train, test))
        return _split_train(name, (tx, train.targets), (vx, test.targets), len(train.classes), seed, val_fraction)

    load.__doc__ = f"torchvision's {cls_name} from ``root``: official train split (minus val) and test split."
    load.__name__ = f"load_{name.replace('-', '_')}"
    return load


load_mnist = _mnist_like("mnist", "MNIST")
load_fashion_mnist = _mnist_like("fashion-mnist", "FashionMNIST")


def load_cifar10(
    arg: str | None, root: str | None, download: bool, seed: int, val_fraction: float, test_fraction: float
) -> Splits:
    """torchvision's CIFAR10 from ``root``: official train split (minus val) and test split."""
    _no_arg("cifar10", arg)
    _check_fractions("cifar10", val_fraction, 0.0)
    train, test = _torchvision_sets("cifar10", "CIFAR10", _resolve_root(root), download)
    # ``data`` is a uint8 N,H,W,C numpy array
    tx, vx = (_to_float(torch.from_numpy(ds.data).permute(0, 3, 1, 2), 255.0) for ds in (train, test))
    ty, vy = (torch.as_tensor(ds.targets, dtype=torch.int64) for ds in (train, test))
    return _split_train("cifar10", (tx, ty), (vx, vy), len(train.classes), seed, val_fraction)


def load_imagefolder(
    arg: str | None, root: str | None, download: bool, seed: int, val_fraction: float, test_fraction: float
) -> Splits:
    """A folder in torchvision ``ImageFolder`` layout (``PATH/class/image.png``), RGB, resized to a square."""
    import torchvision.datasets as tvd
    import torchvision.transforms as T

    if not arg:
        raise UsageError("dataset 'imagefolder' needs a path: imagefolder:PATH (PATH/<class>/<image files>)")
    path = os.path.abspath(os.path.expanduser(arg))
    _check_fractions("imagefolder", val_fraction, test_fraction)
    if not os.path.isdir(path):
        raise UsageError(f"dataset 'imagefolder': {path} is not a folder; expected PATH/<class>/<image files>")
    transform = T.Compose([T.Resize((IMAGEFOLDER_SIZE, IMAGEFOLDER_SIZE)), T.PILToTensor()])
    try:
        ds = tvd.ImageFolder(path, transform=transform)
    except FileNotFoundError:
        raise UsageError(
            f"dataset 'imagefolder': no images found under {path}; expected PATH/<class>/<image files>"
        ) from None
    images = []
    for i, (file, _) in enumerate(ds.samples):
        try:
            images.append(ds[i][0])
        except OSError as exc:
            raise UsageError(f"dataset 'imagefolder': cannot read {file}: {exc}") from None
    x = _to_float(torch.stack(images), 255.0)
    y = torch.as_tensor(ds.targets, dtype=torch.int64)
    return _split_all("imagefolder", x, y, len(ds.classes), seed, val_fraction, test_fraction)


BUILTIN: dict[str, Loader] = {
    "digits": load_digits,
    "mnist": load_mnist,
    "fashion-mnist": load_fashion_mnist,
    "cifar10": load_cifar10,
    "imagefolder": load_imagefolder,
}


def _cached(loader: Loader) -> Loader:
    """Wrap a loader so repeated loads with the same arguments in one process are free."""

    @functools.lru_cache(maxsize=CACHE_SIZE)
    def load_once(
        arg: str | None, root: str | None, download: bool, seed: int, val_fraction: float, test_fraction: float
    ) -> Splits:
        return loader(arg, root, download, seed, val_fraction, test_fraction)

    @functools.wraps(loader)
    def load(
        arg: str | None, root: str | None, download: bool, seed: int, val_fraction: float, test_fraction: float
    ) -> Splits:
        if loader is not load_imagefolder:
            root = _resolve_root(root)
        splits = load_once(arg or None, root, bool(download), int(seed), float(val_fraction), float(test_fraction))
        # a fresh object over the shared tensors, so rebinding a field never poisons the cache
        return dataclasses.replace(splits)

    load.cache_clear = load_once.cache_clear  # type: ignore[attr-defined]
    return load


CACHED: dict[str, Loader] = {name: _cached(loader) for name, loader in BUILTIN.items()}


def clear_cache() -> None:
    """Forget every cached load (for tests, or after files on disk changed)."""
    for load in CACHED.values():
        load.cache_clear()  # type: ignore[attr-defined]


def register_builtin(register: Callable[[str, Loader], None]) -> None:
    """Register the built-in datasets (cached loaders) through a ``searchcore_datasets`` register callback."""
    for name, load in CACHED.items():
        register(name, load)
