"""Tests of ``benchmarks/morpho_digits.py`` (data, scores and its quick mode)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import load_script

pytest.importorskip("skimage")  # the benchmark's SSIM and skeleton (test extra)

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "morpho_digits.py"


@pytest.fixture(scope="module")
def morpho():
    return load_script("morpho_digits", SCRIPT)


def test_styles_change_stroke_thickness_and_the_split_hides_digits_5_to_9(morpho):
    adata = morpho.morpho_digits(n_images=40)
    assert adata.shape == (120, 784) and adata.X.min() >= 0.0 and adata.X.max() <= 1.0
    thickness = {
        style: np.mean([morpho.stroke_thickness(x.reshape(28, 28)) for x in adata[adata.obs["style"] == style].X])
        for style in morpho.STYLES
    }
    assert thickness["thin"] < thickness["normal"] < thickness["thick"]
    train = adata.obs[morpho.training_mask(adata.obs)]
    unseen = train[train["digit"] >= 5]
    assert set(unseen["style"]) == {"normal"} and set(train[train["digit"] < 5]["style"]) == set(morpho.STYLES)


def test_stroke_thickness_of_a_bar(morpho):
    image = np.zeros((28, 28), dtype=np.float32)
    image[4:24, 10:13] = 1.0  # 3 pixels wide, 20 long: area 60 over a skeleton of about 18-20 pixels
    assert 2.9 <= morpho.stroke_thickness(image) <= 3.4
    assert morpho.stroke_thickness(np.zeros((28, 28))) == 0.0


def test_scores_of_a_perfect_and_a_blank_output(morpho):
    truth = morpho.morpho_digits(n_images=3).X
    perfect = morpho.score_images(truth, truth, (28, 28))
    np.testing.assert_allclose(perfect["mse"], 0.0)
    np.testing.assert_allclose(perfect["ssim"], 1.0)
    np.testing.assert_allclose(perfect["thickness_error"], 0.0)
    blank = morpho.score_images(np.zeros_like(truth), truth, (28, 28))
    assert (blank["ssim"] < 0.5).all() and (blank["mse"] > 0).all()


def test_quick_mode_writes_json_table_and_figure(morpho, tmp_path):
    payload = morpho.main(["--quick", "--n-images", "60", "--output-dir", str(tmp_path)])
    stored = json.loads((tmp_path / "morpho_digits.json").read_text())
    assert stored["settings"]["quick"] and len(stored["rows"]) == len(payload["rows"]) == 6  # 3 methods x 2 directions
    assert {row["method"] for row in stored["rows"]} == {"trVAE", "MMD-CVAE", "CVAE"}
    for row in stored["rows"]:
        assert all(np.isfinite(row[name]) for name in morpho.METRICS)
    table = (tmp_path / "morpho_digits.md").read_text()
    assert "normal→thin" in table and "normal→thick" in table and "input (normal digit, unchanged)" in table
    assert "trVAE minus" in table and len(stored["paired"]) == 2 * 2 * len(morpho.METRICS)  # directions x baselines
    assert (tmp_path / "morpho_digits.png").stat().st_size > 1000
    cached = morpho.main(["--quick", "--n-images", "60", "--output-dir", str(tmp_path)])
    assert cached["rows"] == payload["rows"]  # the second run reads every result from the cache
