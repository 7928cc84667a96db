from __future__ import annotations

import numpy as np
import pytest
from helpers import quick_train
from PIL import Image

from scvi_trvae import ImageTRVAE, datasets

ATTRIBUTES = ["Male", "Smiling", "Young"]


def _write_celeba(root, n_images: int = 6, size: tuple[int, int] = (24, 20)):
    """CelebA's layout: list_attr_celeba.txt and img_align_celeba/NNNNNN.jpg (width 20, height 24 here)."""
    folder = root / "img_align_celeba"
    folder.mkdir(parents=True)
    lines = [str(n_images), " ".join(ATTRIBUTES)]
    for index in range(n_images):
        name = f"{index + 1:06d}.png"
        pixels = np.zeros((*size, 3), dtype=np.uint8)
        pixels[..., index % 3] = 20 * (index + 1)  # one plain colour per image
        Image.fromarray(pixels).save(folder / name)
        flags = ["1" if index % 2 == 0 else "-1", "1" if index < 3 else "-1", "-1"]
        lines.append(f"{name}  " + " ".join(f"{flag:>2}" for flag in flags))
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    return root


def test_celeba_folder_to_anndata(tmp_path):
    adata = datasets.celeba(_write_celeba(tmp_path), image_size=8)
    assert adata.shape == (6, 3 * 8 * 8)
    assert adata.uns["image_shape"] == [3, 8, 8]
    assert list(adata.obs.columns) == ATTRIBUTES and list(adata.obs_names[:2]) == ["000001.png", "000002.png"]
    assert adata.obs["Smiling"].tolist() == [True, True, True, False, False, False]
    assert adata.obs["Male"].tolist() == [True, False, True, False, True, False]
    assert not adata.obs["Young"].any()
    image = adata.X[4].reshape(3, 8, 8)  # fifth image: green channel 100/255, channels first
    np.testing.assert_allclose(image[1], 100 / 255, atol=1e-6)
    np.testing.assert_allclose(image[[0, 2]], 0.0)


def test_celeba_selection_and_errors(tmp_path):
    root = _write_celeba(tmp_path)
    assert datasets.celeba(root, image_size=(4, 6), n_images=2).shape == (2, 72)
    assert list(datasets.celeba(root, image_size=4, images=["000003.png"]).obs_names) == ["000003.png"]
    with pytest.raises(KeyError, match=r"not in list_attr_celeba\.txt"):
        datasets.celeba(root, images=["nope.jpg"])
    (root / "img_align_celeba" / "000002.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"000002\.png"):
        datasets.celeba(root)
    with pytest.raises(FileNotFoundError, match=r"list_attr_celeba\.txt"):
        datasets.celeba(tmp_path / "elsewhere")
    (root / "list_attr_celeba.txt").write_text("1\nMale Smiling\n000001.png 1 0\n")
    with pytest.raises(ValueError, match="1 / -1"):
        datasets.celeba(root)


def test_celeba_trains_an_image_model(tmp_path):
    adata = datasets.celeba(_write_celeba(tmp_path, n_images=12), image_size=8)
    adata.obs["smiling"] = adata.obs["Smiling"].map({True: "smiling", False: "neutral"})
    ImageTRVAE.setup_anndata(adata, condition_key="smiling")
    model = quick_train(ImageTRVAE(adata, image_shape=adata.uns["image_shape"], n_hidden=8, n_latent=2), batch_size=6)
    predicted = model.predict_perturbation(adata, source="neutral", target="smiling", mode="mean")
    assert predicted.shape == (9, 192)  # images 4-12 are not smiling
