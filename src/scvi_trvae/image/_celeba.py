"""Loader of a local CelebA folder as an AnnData of flattened images (for ``TRVAE(image_shape=...)``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData

ATTRIBUTE_FILE = "list_attr_celeba.txt"
IMAGE_FOLDERS = ("img_align_celeba", "img_align_celeba_png")


def read_celeba_attributes(path: str | Path) -> pd.DataFrame:
    """Read ``list_attr_celeba.txt``: one row per image file name, one boolean column per attribute.

    The file holds the number of images, then the attribute names, then one line per image
    (file name and ``1`` / ``-1`` per attribute).
    """
    lines = Path(path).read_text().splitlines()
    if len(lines) < 2:
        raise ValueError(f"{path} is not a CelebA attribute file: it needs a count line and an attribute-name line.")
    names = lines[1].split()
    rows = [line.split() for line in lines[2:] if line.strip()]
    bad = [row[0] for row in rows if len(row) != len(names) + 1 or not set(row[1:]) <= {"1", "-1"}]
    if bad:
        raise ValueError(
            f"{path}: {len(bad)} line(s) do not hold a file name and {len(names)} values of 1 / -1 (first: {bad[0]!r})."
        )
    values = np.array([row[1:] for row in rows], dtype=int) == 1
    return pd.DataFrame(values, index=pd.Index([row[0] for row in rows], name="image"), columns=names)


def _image_folder(root: Path) -> Path:
    for name in IMAGE_FOLDERS:
        if (root / name).is_dir():
            return root / name
    return root


def _load_image(path: Path, image_size: tuple[int, int]) -> np.ndarray:
    """Centre square crop, resize to ``image_size`` and return channels-first RGB in [0, 1], flattened."""
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        width, height = image.size
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        image = image.crop((left, top, left + side, top + side)).resize(
            (image_size[1], image_size[0]), Image.Resampling.BILINEAR
        )
        pixels = np.asarray(image, dtype=np.float32) / 255.0
    return pixels.transpose(2, 0, 1).ravel()


def celeba(
    path: str | Path,
    *,
    image_size: int | tuple[int, int] = 64,
    n_images: int | None = None,
    images: Sequence[str] | None = None,
) -> AnnData:
    """Load a local CelebA folder as an AnnData: ``X`` flattened RGB images, ``obs`` the 40 attributes.

    CelebA (Liu et al. 2015) cannot be downloaded by this package; get it from its authors and
    point ``path`` at the folder holding ``list_attr_celeba.txt`` and the aligned images
    (``img_align_celeba/`` or the images next to the attribute file). Each image is cropped to its
    centre square and resized to ``image_size``, as in the trVAE paper's smile experiment
    (``docs/images.md``). Memory: 12,288 float32 values per 64x64 image (about 10 GB for all
    202,599 images), so select images with ``n_images`` or ``images``.

    Parameters
    ----------
    path
        CelebA folder.
    image_size
        Height and width after resizing (an int for square images).
    n_images
        Load only the first ``n_images`` images of the attribute file (after ``images``).
    images
        File names to load (rows of the attribute file), e.g. chosen by attribute with
        :func:`~scvi_trvae.image._celeba.read_celeba_attributes`.

    Returns
    -------
    AnnData with ``X`` of shape ``(n_images, 3 * height * width)`` (channels first, values in
    [0, 1]), ``obs`` one boolean column per attribute (``Smiling``, ``Male``, ...) indexed by
    file name, and ``uns["image_shape"] = [3, height, width]`` to pass to
    ``TRVAE(adata, image_shape=adata.uns["image_shape"])``.
    """
    root = Path(path)
    attribute_file = root / ATTRIBUTE_FILE
    if not attribute_file.is_file():
        raise FileNotFoundError(f"No {ATTRIBUTE_FILE} in {root}; point `path` at the CelebA folder.")
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(int(s) for s in image_size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"image_size must be a positive int or (height, width), got {image_size!r}.")
    attributes = read_celeba_attributes(attribute_file)
    if images is not None:
        missing = [name for name in images if name not in attributes.index]
        if missing:
            raise KeyError(f"{len(missing)} image(s) are not in {ATTRIBUTE_FILE} (first: {missing[0]!r}).")
        attributes = attributes.loc[list(images)]
    if n_images is not None:
        attributes = attributes.iloc[:n_images]
    folder = _image_folder(root)
    files = [folder / name for name in attributes.index]
    absent = [file.name for file in files if not file.is_file()]
    if absent:
        raise FileNotFoundError(
            f"{len(absent)} image(s) listed in {ATTRIBUTE_FILE} are not in {folder} (first: {absent[0]!r})."
        )
    pixels = np.stack([_load_image(file, size) for file in files]) if files else np.zeros((0, 3 * size[0] * size[1]))
    var_names = [f"{channel}_{y}_{x}" for channel in "RGB" for y in range(size[0]) for x in range(size[1])]
    obs = attributes.copy()
    obs.index = obs.index.astype(str)
    return AnnData(
        X=pixels.astype(np.float32), obs=obs, var=pd.DataFrame(index=var_names), uns={"image_shape": [3, *size]}
    )
