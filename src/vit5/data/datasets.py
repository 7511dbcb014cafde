"""Datasets that decode and transform images reproducibly.

Every sample's random augmentation is drawn from a generator seeded by ``(seed, epoch, index)``,
so a run's data stream does not depend on the number of loader workers, on which process reads the
sample (DDP), or on where an interrupted run was resumed. Reading a sample leaves the global torch
RNG as it was.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import random
import stat
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from vit5.data.sources import ArraySplit, FileSplit
from vit5.data.transforms import ArrayTransform

logger = logging.getLogger(__name__)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one sample of one epoch."""
    return ((seed * 1_000_003 + epoch) * 10_000_019 + index) % (2**63 - 1)


# PIL modes read as colour; every other 8-bit mode is read as grayscale ("L").
_COLOUR_MODES = ("RGB", "RGBA", "RGBa", "RGBX", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV")


#: The most pixels vit5 decodes in one image (width x height, before any resize): 178,956,970,
#: where Pillow itself calls an image a decompression bomb (about 13,400 x 13,400). A header that
#: claims more is refused before any pixel memory is allocated (a 99-byte PNG can claim
#: 20000 x 20000). ``VIT5_MAX_IMAGE_PIXELS`` lowers it.
MAX_IMAGE_PIXELS = 178_956_970


def max_image_pixels() -> int:
    """The pixel limit of :func:`read_image` (``VIT5_MAX_IMAGE_PIXELS``, else :data:`MAX_IMAGE_PIXELS`)."""
    text = os.environ.get("VIT5_MAX_IMAGE_PIXELS")
    if text is None:
        return MAX_IMAGE_PIXELS
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"VIT5_MAX_IMAGE_PIXELS must be a positive integer, got {text!r}") from None
    if value < 1:
        raise ValueError(f"VIT5_MAX_IMAGE_PIXELS must be a positive integer, got {text!r}")
    return value


def read_image(source: str | os.PathLike | bytes | Any) -> Image.Image:
    """Decode an image to an 8-bit ``L`` (grayscale) or ``RGB`` image: the one reader of vit5.

    ``source`` is a path, the encoded bytes, or an object with ``read_bytes()`` (a
    :class:`pathlib.Path`, or a record of a Hugging Face ``datasets`` table). Folders, manifests,
    ``datasets`` tables, ``vit5 predict`` and ``vit5 eval`` all read through here.

    Palette images are expanded to their colours (not read as palette indices), alpha channels
    are dropped (the colour under them is kept, as torchvision's RGB read mode does), and 16-bit
    grayscale (PIL modes ``I;16*`` and ``I``) is scaled to 8 bits (``round(v / 257)``), so that
    every transform and augmentation sees the value range it was written for. An image whose header
    claims more than :func:`max_image_pixels` pixels is refused from its header alone.

    Raises:
        ValueError: too many pixels, or a floating-point image (mode ``F``), whose value range is unknown.
        OSError, PIL.UnidentifiedImageError: the file cannot be read or decoded.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        name, opened = "image bytes", io.BytesIO(bytes(source))
    elif isinstance(source, (str, os.PathLike)):
        name = str(source)
        with _regular_file(source) as handle:
            return _decode(handle, name)
    else:
        name, opened = str(source), io.BytesIO(source.read_bytes())
    return _decode(opened, name)


@contextlib.contextmanager
def _regular_file(path: str | os.PathLike) -> Iterator[Any]:
    """``path`` opened for reading, refused unless it is a regular file: a FIFO, socket or device
    named like an image (``x.png``) in a received folder or manifest would block or never end."""
    nonblocking = getattr(os, "O_NONBLOCK", 0)  # opening a FIFO does not wait for a writer
    with open(path, "rb", opener=lambda file, flags: os.open(file, flags | nonblocking)) as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise ValueError(f"{os.fspath(path)}: not a regular file (a FIFO, socket or device)")
        yield handle


def _decode(opened: Any, name: str) -> Image.Image:
    limit = max_image_pixels()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(opened)
        except Image.DecompressionBombError as error:  # Pillow's own limit (MAX_IMAGE_PIXELS's default)
            raise ValueError(f"{name}: refused to decode: {error}") from None
        except UnidentifiedImageError:  # Pillow names the file object; name the file
            raise UnidentifiedImageError(f"cannot identify image file {name!r}") from None
    with image:
        width, height = image.size
        if width * height > limit:
            raise ValueError(
                f"{name}: the image header claims {width}x{height} = {width * height:,} pixels, more than "
                f"the limit of {limit:,} (set VIT5_MAX_IMAGE_PIXELS to raise it)"
            )
        image.load()
        mode = image.mode
        if mode in ("L", "RGB"):
            return image.copy()
        if mode == "I" or mode.startswith("I;16"):
            pixels = np.clip(np.asarray(image, dtype=np.float64), 0, 65535) / 257.0
            return Image.fromarray(np.rint(pixels).astype(np.uint8), "L")
        if mode == "F":
            raise ValueError("32-bit floating-point images are not supported; save it with 8 or 16 bits")
        return image.convert("RGB" if mode in _COLOUR_MODES else "L")


class ImageDataset(torch.utils.data.Dataset):
    """Images from arrays or files, transformed with per-sample seeded randomness.

    Args:
        source: An :class:`ArraySplit` (uint8 ``[N, H, W, C]``) or a :class:`FileSplit`.
        transform: An :class:`ArrayTransform` (array sources at the model resolution), or a
            torchvision transform taking an image (CHW uint8 tensor or PIL image).
        seed: Base seed of the augmentation randomness.
        skip_bad_images: For file datasets, replace an image that fails to decode by the next
            readable one (with a warning) instead of raising ``ValueError``.

    Items are ``(image [C, H, W] float32, label int)``. Call :meth:`set_epoch` before each epoch.
    An index ``i + c * len(dataset)`` (the ``c``-th repeat of a repeated-augmentation sampler) reads
    image ``i`` with augmentation randomness of its own.
    """

    def __init__(
        self,
        source: ArraySplit | FileSplit,
        transform: Callable,
        seed: int = 0,
        skip_bad_images: bool = False,
    ) -> None:
        self.source = source
        self.transform = transform
        self.seed = seed
        self.epoch = 0
        self.skip_bad_images = skip_bad_images
        self.labels = np.asarray(source.labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _load(self, index: int) -> torch.Tensor | Image.Image:
        if isinstance(self.source, ArraySplit):
            return torch.from_numpy(np.ascontiguousarray(self.source.images[index])).permute(
                2, 0, 1
            )  # (C, H, W)
        path = self.source.paths[index]
        try:
            return read_image(path)
        except (UnidentifiedImageError, OSError, ValueError) as error:
            raise ValueError(f"cannot decode image {path}: {error}") from error

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        tries = len(self) if self.skip_bad_images else 1
        repeat = index - index % len(self)  # 0, or c * len for the c-th repeat of the image
        for offset in range(tries):
            position = (index + offset) % len(self)
            seed = sample_seed(self.seed, self.epoch, position + repeat)
            if isinstance(self.transform, ArrayTransform):
                return self.transform(self.source.images[position], random.Random(seed)), int(
                    self.labels[position]
                )
            try:
                image = self._load(position)
            except ValueError as error:
                if not self.skip_bad_images:
                    raise
                logger.warning("%s; using the next image instead", error)
                continue
            # torchvision draws from the global generator: seed it for this sample, then restore it.
            # (generator.manual_seed is ~100x cheaper than torch.manual_seed / fork_rng.)
            generator = torch.default_generator
            state = generator.get_state()
            generator.manual_seed(seed)
            try:
                tensor = self.transform(image)
            finally:
                generator.set_state(state)
            return tensor, int(self.labels[position])
        raise ValueError("no image in the dataset could be decoded")
