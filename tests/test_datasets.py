from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import pooch
import pytest
import requests
from scipy import stats

from scvi_trvae.datasets import KANG2018_URL, DownloadError, haber2017, kang2018, synthetic_perturbation

SHARED_DATA = Path(__file__).parents[1].parent / "shared" / "data"


@pytest.fixture(scope="module")
def adata() -> anndata.AnnData:
    return synthetic_perturbation()


def _mean_difference(adata: anndata.AnnData, condition: str, cell_type: str | None = None) -> np.ndarray:
    """Per-gene mean of X in ``condition`` minus the mean in the control (optionally within one cell type)."""
    control = adata.obs["condition"].cat.categories[0]
    in_type = np.ones(adata.n_obs, bool) if cell_type is None else (adata.obs["cell_type"] == cell_type).to_numpy()
    stim = in_type & (adata.obs["condition"] == condition).to_numpy()
    ctrl = in_type & (adata.obs["condition"] == control).to_numpy()
    return adata.X[stim].mean(0) - adata.X[ctrl].mean(0)


# --------------------------------------------------------------------------------------------------------------------
# synthetic_perturbation
# --------------------------------------------------------------------------------------------------------------------
def test_default_shapes_dtypes_and_annotations(adata):
    assert adata.shape == (5 * 2 * 150, 500)
    assert isinstance(adata.X, np.ndarray)
    assert adata.X.dtype == np.float32
    assert adata.layers["counts"].shape == adata.shape
    assert adata.obs_names.is_unique
    assert adata.var_names.is_unique
    assert adata.var_names[0] == "gene_0000"
    assert adata.var_names[-1] == "gene_0499"

    condition, cell_type = adata.obs["condition"], adata.obs["cell_type"]
    assert isinstance(condition.dtype, pd.CategoricalDtype)
    assert isinstance(cell_type.dtype, pd.CategoricalDtype)
    assert list(condition.cat.categories) == ["control", "stimulated"]
    assert list(cell_type.cat.categories) == ["type_A", "type_B", "type_C", "type_D", "type_E"]
    group_sizes = pd.crosstab(cell_type, condition)
    assert (group_sizes.to_numpy() == 150).all()

    assert adata.var["response_gene"].dtype == bool
    assert adata.var["response_gene"].sum() == 60
    assert (adata.var["response_gene"] == adata.var["response_stimulated"]).all()
    assert not (adata.var["marker_gene"] & adata.var["response_gene"]).any()
    assert adata.var["marker_gene"].sum() == 5 * 15
    assert adata.varm["response_lfc_stimulated"].shape == (500, 5)

    params = adata.uns["synthetic_perturbation"]
    assert params["seed"] == 0
    assert params["n_genes"] == 500
    assert params["n_cell_types"] == 5
    assert params["n_cells_per_group"] == 150
    assert list(params["conditions"]) == ["control", "stimulated"]


def _fingerprint(adata: anndata.AnnData) -> str:
    """SHA-256 over every array, the obs/var tables and the recorded parameters (first 16 hex digits)."""
    digest = hashlib.sha256()
    for array in (adata.X, adata.layers["counts"], *(adata.varm[k] for k in sorted(adata.varm))):
        digest.update(np.ascontiguousarray(array).tobytes())
    digest.update(adata.obs.to_csv().encode())
    digest.update(adata.var.to_csv().encode())
    digest.update(json.dumps(adata.uns["synthetic_perturbation"], sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, "e1455fceb4137474"),
        (
            {"n_cell_types": 3, "n_genes": 80, "n_cells_per_group": 20, "n_response_genes": 10, "n_marker_genes": 5,
             "seed": 3},
            "d3c80b71b58dff12",
        ),
        (
            {"n_cell_types": 2, "n_genes": 100, "conditions": ("control", "drug_a", "drug_b"), "n_cells_per_group": 30,
             "n_response_genes": 8, "seed": 2},
            "6239b5766f8dd61a",
        ),
        (
            {"n_cell_types": 3, "n_genes": 100, "n_cells_per_group": 50, "n_response_genes": 10, "n_marker_genes": 5,
             "condition_proportions": {"control": 0.9, "stimulated": 0.1}, "response_scale": 0.5,
             "shared_response_fraction": 0.2, "library_size": 500.0, "seed": 7},
            "8e997cb85e3ef9cd",
        ),
    ],
)  # fmt: skip
def test_output_is_byte_identical_to_the_recorded_data(kwargs, expected):
    # digests recorded from the single-function generator before it was split into named steps
    assert _fingerprint(synthetic_perturbation(**kwargs)) == expected


def test_counts_are_integers_and_x_is_lognormalized(adata):
    counts = adata.layers["counts"]
    assert (counts >= 0).all()
    np.testing.assert_array_equal(counts, np.round(counts))
    # realistic sparsity and library sizes
    assert 0.2 < (counts == 0).mean() < 0.8
    assert 1000 < np.median(counts.sum(1)) < 4000
    expected = np.log1p(counts / counts.sum(1, keepdims=True) * 1e4)
    np.testing.assert_allclose(adata.X, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(adata.obs["n_counts"], counts.sum(1))


def test_same_seed_is_deterministic_and_seeds_differ():
    kwargs = {"n_cell_types": 3, "n_genes": 80, "n_cells_per_group": 20, "n_response_genes": 10, "n_marker_genes": 5}
    a, b = synthetic_perturbation(seed=3, **kwargs), synthetic_perturbation(seed=3, **kwargs)
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.layers["counts"], b.layers["counts"])
    pd.testing.assert_frame_equal(a.obs, b.obs)
    pd.testing.assert_frame_equal(a.var, b.var)
    c = synthetic_perturbation(seed=4, **kwargs)
    assert not np.array_equal(a.layers["counts"], c.layers["counts"])
    assert not (a.var["response_gene"] == c.var["response_gene"]).all()


def test_response_is_on_response_genes(adata):
    diff = _mean_difference(adata, "stimulated")
    response = adata.var["response_gene"].to_numpy()
    on, off = np.abs(diff[response]).mean(), np.abs(diff[~response]).mean()
    assert on > 0.5
    assert off < 0.12
    assert on > 6 * off
    # both up- and down-regulation
    true_lfc = adata.varm["response_lfc_stimulated"][response].mean(1)
    assert (true_lfc > 0).sum() >= 10
    assert (true_lfc < 0).sum() >= 10
    # non-response genes have no true effect
    assert not adata.varm["response_lfc_stimulated"][~response].any()


def test_response_is_cell_type_specific(adata):
    cell_types = adata.obs["cell_type"].cat.categories
    diffs = np.stack([_mean_difference(adata, "stimulated", t) for t in cell_types])
    corr = np.corrcoef(diffs)[np.triu_indices(len(cell_types), k=1)]
    assert corr.max() < 0.95
    assert corr.mean() < 0.85
    assert corr.min() > 0.2  # the shared program still makes responses related
    true_corr = np.corrcoef(adata.varm["response_lfc_stimulated"].T)[np.triu_indices(len(cell_types), k=1)]
    assert true_corr.max() < 0.95
    # the mean response of the other types is not a perfect predictor of a held-out type
    for i in range(len(cell_types)):
        others = np.delete(diffs, i, axis=0).mean(0)
        assert np.corrcoef(others, diffs[i])[0, 1] < 0.95
    # the response strength differs between cell types
    response = adata.var["response_gene"].to_numpy()
    magnitude = np.abs(diffs[:, response]).mean(1)
    assert magnitude.max() > 1.2 * magnitude.min()


def test_marker_genes_mark_their_cell_type(adata):
    control = (adata.obs["condition"] == "control").to_numpy()
    for cell_type in adata.obs["cell_type"].cat.categories:
        markers = (adata.var["marker_cell_type"] == cell_type).to_numpy()
        in_type = control & (adata.obs["cell_type"] == cell_type).to_numpy()
        out_type = control & ~in_type
        assert adata.X[in_type][:, markers].mean() > adata.X[out_type][:, markers].mean() + 1.0


def test_per_cell_response_strength(adata):
    strength = adata.obs["response_strength"].to_numpy()
    control = (adata.obs["condition"] == "control").to_numpy()
    assert (strength[control] == 0).all()
    assert 0.8 < strength[~control].mean() < 1.2
    assert strength[~control].std() > 0.2


def test_imbalanced_condition_proportions():
    adata = synthetic_perturbation(
        n_cell_types=3,
        n_genes=100,
        n_cells_per_group=50,
        n_response_genes=10,
        n_marker_genes=5,
        condition_proportions={"control": 0.9, "stimulated": 0.1},
    )
    sizes = pd.crosstab(adata.obs["cell_type"], adata.obs["condition"])
    assert (sizes["control"] == 90).all()
    assert (sizes["stimulated"] == 10).all()
    assert adata.uns["synthetic_perturbation"]["condition_proportions"] == pytest.approx(
        {"control": 0.9, "stimulated": 0.1}
    )


def test_more_than_two_conditions():
    conditions = ("ctrl", "drug_a", "drug_b")
    adata = synthetic_perturbation(
        n_cell_types=3, n_genes=200, conditions=conditions, n_cells_per_group=60, n_response_genes=25
    )
    assert adata.n_obs == 3 * 3 * 60
    assert list(adata.obs["condition"].cat.categories) == list(conditions)
    mask_a, mask_b = adata.var["response_drug_a"].to_numpy(), adata.var["response_drug_b"].to_numpy()
    assert mask_a.sum() == mask_b.sum() == 25
    assert not np.array_equal(mask_a, mask_b)
    np.testing.assert_array_equal(adata.var["response_gene"].to_numpy(), mask_a | mask_b)
    for condition, mask in [("drug_a", mask_a), ("drug_b", mask_b)]:
        diff = np.abs(_mean_difference(adata, condition))
        assert diff[mask].mean() > 3 * diff[~(mask_a | mask_b)].mean()


def test_response_scale_zero_gives_no_response():
    adata = synthetic_perturbation(n_cell_types=2, n_genes=100, n_cells_per_group=100, response_scale=0.0)
    assert not adata.var["response_gene"].any()
    assert np.abs(_mean_difference(adata, "stimulated")).mean() < 0.1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"conditions": ("control",)}, "at least two"),
        ({"conditions": "control"}, "sequence"),
        ({"conditions": ("a", "a")}, "unique"),
        ({"conditions": ("a", "b/c")}, "/"),
        ({"n_response_genes": 501}, "n_response_genes"),
        ({"n_response_genes": -1}, "n_response_genes"),
        ({"n_genes": 0}, "n_genes"),
        ({"n_cell_types": 0}, "n_cell_types"),
        ({"n_cells_per_group": 2.5}, "n_cells_per_group"),
        ({"seed": -1}, "seed"),
        ({"shared_response_fraction": 1.5}, "shared_response_fraction"),
        ({"response_scale": -1.0}, "response_scale"),
        ({"library_size": 0.0}, "library_size"),
        ({"condition_proportions": {"control": 0.5}}, "condition_proportions"),
        ({"condition_proportions": {"control": 1.0, "stimulated": 0.0}}, "positive"),
        ({"condition_proportions": {"control": 1.0, "stimulated": 1e-6}}, "no cells"),
        ({"n_genes": 100, "n_response_genes": 90, "n_marker_genes": 15}, "marker genes"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=re.escape(match)):
        synthetic_perturbation(**kwargs)


def test_h5ad_round_trip(tmp_path):
    adata = synthetic_perturbation(
        n_cell_types=2, n_genes=60, conditions=("control", "a", "b"), n_cells_per_group=10, n_response_genes=8
    )
    path = tmp_path / "synthetic.h5ad"
    adata.write_h5ad(path)
    back = anndata.read_h5ad(path)
    np.testing.assert_array_equal(back.X, adata.X)
    np.testing.assert_array_equal(back.layers["counts"], adata.layers["counts"])
    pd.testing.assert_frame_equal(back.obs, adata.obs)
    pd.testing.assert_frame_equal(back.var, adata.var)
    np.testing.assert_array_equal(back.varm["response_lfc_a"], adata.varm["response_lfc_a"])
    assert back.uns["synthetic_perturbation"]["seed"] == 0
    assert list(back.uns["synthetic_perturbation"]["conditions"]) == ["control", "a", "b"]


# --------------------------------------------------------------------------------------------------------------------
# kang2018 / haber2017
# --------------------------------------------------------------------------------------------------------------------
def _tiny_perturbation_file(path: Path, obs_columns: tuple[str, ...] = ("condition", "cell_type")) -> anndata.AnnData:
    obs = pd.DataFrame(index=[f"c{i}" for i in range(4)])
    values = {"condition": ["control", "stimulated"] * 2, "cell_type": ["B", "B", "NK", "NK"]}
    for column in obs_columns:
        obs[column] = pd.Categorical(values[column])
    adata = anndata.AnnData(np.arange(12, dtype=np.float32).reshape(4, 3), obs=obs)
    adata.write_h5ad(path)
    return adata


class _FakeServer:
    """Stand-in for pooch's HTTP downloader: serves fixed bodies (or raises) and records the addresses.

    Patched in as ``pooch.HTTPDownloader.__call__``, so pooch's own retrieve logic (temporary file, checksum,
    cache) runs for real and nothing touches the network.
    """

    def __init__(self, *bodies: bytes | Exception) -> None:
        self.bodies = list(bodies)
        self.calls: list[str] = []

    def install(self, monkeypatch) -> _FakeServer:
        server = self

        def fake_call(downloader, url, output_file, pooch_, check_only=False):
            server.calls.append(url)
            body = server.bodies.pop(0)
            if isinstance(body, Exception):
                raise body
            Path(output_file).write_bytes(body)

        monkeypatch.setattr(pooch.HTTPDownloader, "__call__", fake_call)
        return self


def _sha256(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


@pytest.fixture
def h5ad_bytes(tmp_path) -> bytes:
    source = tmp_path / "source" / "tiny.h5ad"
    source.parent.mkdir()
    _tiny_perturbation_file(source)
    return source.read_bytes()


@pytest.fixture
def offline(monkeypatch) -> _FakeServer:
    """No network: any download attempt fails the way requests does when offline."""
    return _FakeServer(*[requests.ConnectionError("Failed to resolve 'drive.usercontent.google.com'")] * 3).install(
        monkeypatch
    )


def test_kang2018_reads_existing_path_without_network(tmp_path, offline):
    path = tmp_path / "kang.h5ad"
    written = _tiny_perturbation_file(path)
    adata = kang2018(path)
    np.testing.assert_array_equal(adata.X, written.X)
    assert list(adata.obs["condition"].cat.categories) == ["control", "stimulated"]
    assert kang2018(str(path), known_hash="sha256:" + "0" * 64).shape == (4, 3)  # a local file is taken as it is
    assert offline.calls == []


def test_kang2018_missing_column_is_a_clear_error(tmp_path):
    path = tmp_path / "kang.h5ad"
    _tiny_perturbation_file(path, obs_columns=("condition",))
    with pytest.raises(ValueError, match="cell_type"):
        kang2018(path)


def test_kang2018_downloads_missing_path_with_checksum(tmp_path, monkeypatch, h5ad_bytes):
    server = _FakeServer(h5ad_bytes).install(monkeypatch)
    target = tmp_path / "data" / "kang.h5ad"
    adata = kang2018(target, known_hash=_sha256(h5ad_bytes))
    assert server.calls == [KANG2018_URL]
    assert target.read_bytes() == h5ad_bytes
    assert sorted(p.name for p in target.parent.iterdir()) == ["kang.h5ad"]  # no temporary file left
    assert adata.shape == (4, 3)


def test_kang2018_uses_cache_when_path_is_none(tmp_path, monkeypatch, h5ad_bytes):
    cache = tmp_path / "cache"
    monkeypatch.setenv("SCVI_TRVAE_CACHE_DIR", str(cache))
    server = _FakeServer(h5ad_bytes).install(monkeypatch)
    assert kang2018().shape == (4, 3)
    assert len(server.calls) == 1
    assert [p.name for p in cache.iterdir()] == ["kang2018_train_pbmc.h5ad"]
    # the second call is served from the cache: no further download
    assert kang2018().shape == (4, 3)
    assert len(server.calls) == 1


def test_kang2018_custom_url(tmp_path, monkeypatch, h5ad_bytes):
    monkeypatch.setenv("SCVI_TRVAE_CACHE_DIR", str(tmp_path))
    server = _FakeServer(h5ad_bytes).install(monkeypatch)
    kang2018(url="https://example.org/pbmc.h5ad")
    assert server.calls == ["https://example.org/pbmc.h5ad"]
    assert not (tmp_path / "kang2018_train_pbmc.h5ad").exists()


def test_kang2018_checksum_mismatch_is_a_one_line_error(tmp_path, monkeypatch, h5ad_bytes):
    _FakeServer(h5ad_bytes).install(monkeypatch)
    target = tmp_path / "data" / "kang.h5ad"
    wrong = "sha256:" + "0" * 64
    with pytest.raises(DownloadError, match="does not match its checksum") as info:
        kang2018(target, known_hash=wrong)
    message = str(info.value)
    assert "\n" not in message
    assert KANG2018_URL in message
    assert wrong in message
    assert "path=" in message
    assert list(target.parent.iterdir()) == []  # neither the target nor a temporary file


def test_kang2018_offline_is_a_one_line_error(tmp_path, offline):
    target = tmp_path / "kang.h5ad"
    with pytest.raises(DownloadError, match=re.escape(KANG2018_URL)) as info:
        kang2018(target)
    message = str(info.value)
    assert "\n" not in message
    assert "offline" in message
    assert "path=" in message
    assert offline.calls == [KANG2018_URL]
    assert list(tmp_path.iterdir()) == []


def test_kang2018_http_error_names_the_reason(tmp_path, monkeypatch):
    _FakeServer(requests.HTTPError("404 Client Error: Not Found")).install(monkeypatch)
    with pytest.raises(DownloadError, match="404") as info:
        kang2018(tmp_path / "kang.h5ad", url="https://example.org/x")
    assert "https://example.org/x" in str(info.value)


def test_kang2018_rejects_non_hdf5_download(tmp_path, monkeypatch):
    _FakeServer(b"<html><body>quota exceeded</body></html>").install(monkeypatch)
    target = tmp_path / "kang.h5ad"
    with pytest.raises(DownloadError, match="HDF5"):
        kang2018(target, url="https://example.org/x")
    assert list(tmp_path.iterdir()) == []


def test_haber2017_downloads_from_a_given_url(tmp_path, monkeypatch, h5ad_bytes):
    server = _FakeServer(h5ad_bytes).install(monkeypatch)
    target = tmp_path / "haber.h5ad"
    assert haber2017(target, url="https://example.org/haber.h5ad", known_hash=_sha256(h5ad_bytes)).shape == (4, 3)
    assert server.calls == ["https://example.org/haber.h5ad"]


def test_haber2017_needs_a_path(tmp_path):
    with pytest.raises(ValueError, match="GSE92332"):
        haber2017()
    with pytest.raises(FileNotFoundError, match="GSE92332"):
        haber2017(tmp_path / "missing.h5ad")
    path = tmp_path / "haber.h5ad"
    _tiny_perturbation_file(path)
    assert haber2017(path).shape == (4, 3)


@pytest.mark.skipif(not (SHARED_DATA / "kang2018_pbmc_ifnb_lognorm.h5ad").exists(), reason="shared data absent")
def test_kang2018_shared_file():
    adata = kang2018(SHARED_DATA / "kang2018_pbmc_ifnb_lognorm.h5ad")
    assert set(adata.obs["condition"].unique()) == {"control", "stimulated"}
    assert "NK" in set(adata.obs["cell_type"])


@pytest.mark.skipif(not (SHARED_DATA / "haber2017_gut_3cond_lognorm.h5ad").exists(), reason="shared data absent")
def test_haber2017_shared_file():
    adata = haber2017(SHARED_DATA / "haber2017_gut_3cond_lognorm.h5ad")
    assert adata.obs["condition"].nunique() == 3


def test_state_dependence_scales_response_by_visible_state():
    from scvi_trvae.datasets import synthetic_perturbation

    kwargs = {"n_cell_types": 3, "n_genes": 120, "n_cells_per_group": 80, "n_response_genes": 20, "seed": 4}
    plain = synthetic_perturbation(**kwargs)
    off = synthetic_perturbation(**kwargs, state_dependence=0.0)
    np.testing.assert_array_equal(plain.layers["counts"], off.layers["counts"])  # default data unchanged
    assert "cell_state" not in off.obs
    adata = synthetic_perturbation(**kwargs, state_dependence=0.8)
    state, genes = adata.obs["cell_state"].to_numpy(), adata.var["state_gene"].to_numpy()
    assert genes.sum() == 20 and not (genes & adata.var["response_gene"].to_numpy()).any()
    assert not (genes & adata.var["marker_gene"].to_numpy()).any()
    control = (adata.obs["condition"] == "control").to_numpy()
    # the state is visible in the control cells (state genes follow it) ...
    state_score = adata.X[control][:, genes].mean(1)
    assert np.corrcoef(state_score, state[control])[0, 1] > 0.5
    # ... and scales the response strength of perturbed cells
    strength = adata.obs["response_strength"].to_numpy()
    assert np.corrcoef(np.log(strength[~control]), state[~control])[0, 1] > 0.5
    assert adata.uns["synthetic_perturbation"]["state_dependence"] == 0.8
    with pytest.raises(ValueError, match="state_dependence"):
        synthetic_perturbation(**kwargs, state_dependence=-1.0)


def test_synthetic_counterfactual_is_the_noise_free_expression_and_each_cells_own_response():
    from scvi_trvae.datasets import synthetic_counterfactual

    adata = synthetic_perturbation(n_cell_types=3, n_genes=200, n_cells_per_group=80, seed=5, state_dependence=1.0)
    for condition in ("control", "stimulated"):
        cells = adata[(adata.obs["cell_type"] == "type_B") & (adata.obs["condition"] == condition)]
        truth = synthetic_counterfactual(cells, condition)
        assert truth.shape == cells.shape and truth.dtype == np.float32
        # the observed cells scatter around their noise-free expression
        assert np.corrcoef(truth.mean(0), cells.X.mean(0))[0, 1] > 0.97
    control = adata[(adata.obs["cell_type"] == "type_B") & (adata.obs["condition"] == "control")]
    response = synthetic_counterfactual(control, "stimulated") - synthetic_counterfactual(control, "control")
    effect = adata.varm["response_lfc_stimulated"][:, 1]
    gene = int(np.argmax(effect))  # the strongest up-regulated gene of type_B
    # each cell's own response grows with its state, as exp(state_dependence * state)
    strength = np.exp(control.obs["cell_state"].to_numpy())
    assert stats.spearmanr(response[:, gene], strength).statistic > 0.99
    # a subset of genes gives the same values as the full data set
    np.testing.assert_allclose(
        synthetic_counterfactual(control[:, 10:20], "stimulated"),
        response[:, 10:20] + synthetic_counterfactual(control[:, 10:20], "control"),
        rtol=1e-5,
        atol=1e-6,
    )


def test_synthetic_counterfactual_without_state_is_one_response_per_cell_type():
    from scvi_trvae.datasets import synthetic_counterfactual

    adata = synthetic_perturbation(n_cell_types=2, n_genes=120, n_cells_per_group=20, n_response_genes=10, seed=1)
    control = adata[adata.obs["condition"] == "control"]
    response = synthetic_counterfactual(control, "stimulated") - synthetic_counterfactual(control, "control")
    for cell_type in ("type_A", "type_B"):
        rows = response[(control.obs["cell_type"] == cell_type).to_numpy()]
        np.testing.assert_allclose(rows, np.broadcast_to(rows[0], rows.shape), atol=1e-5)
    with pytest.raises(ValueError, match="unknown condition 'drug'"):
        synthetic_counterfactual(control, "drug")
    plain = control.copy()
    del plain.uns["synthetic_perturbation"]
    with pytest.raises(ValueError, match="synthetic_perturbation"):
        synthetic_counterfactual(plain, "stimulated")
