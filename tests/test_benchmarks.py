"""Tests of the out-of-sample benchmark (``benchmarks/oos``), its baseline models and the other benchmark scripts.

``benchmarks/`` is on the test path (``pythonpath`` in ``pyproject.toml``), as it is for its scripts.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil

import _cyclegan as cyclegan
import _saucie as saucie
import _scgen as scgen
import mmd_bandwidths
import numpy as np
import pytest
import torch
import tune_kang_nk as tune
from helpers import has_row, table_rows
from oos import cache, cli, paths, registry
from oos.datasets import DatasetSpec, load_dataset
from oos.expression import TARGET_LIBRARY_SIZE
from oos.methods import AUTO_EPOCHS, METHODS, NotApplicable, fit_predict_scvi, fit_predict_trvae
from oos.scarches import fit_predict_scarches
from oos.splits import Split, make_split, select_genes

from scvi_trvae.datasets import synthetic_perturbation
from scvi_trvae.metrics import METRIC_KEYS

SHARED_DATA = paths.DATA_DIR
KANG = SHARED_DATA / "kang2018_pbmc_ifnb_lognorm.h5ad"
#: log1p of counts per 10,000: the most a count model's prediction can be
MAX_LOG_EXPRESSION = np.log1p(TARGET_LIBRARY_SIZE) + 1e-3


@contextlib.contextmanager
def _restoring_threads():
    """``main`` sets torch's and numba's thread counts; give other tests theirs back."""
    import numba

    torch_threads, numba_threads = torch.get_num_threads(), numba.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(torch_threads)
        numba.set_num_threads(numba_threads)


@pytest.fixture
def one_thread():
    with _restoring_threads():
        torch.set_num_threads(1)
        yield


# ------------------------------------------------------------------------------------------- small pieces
def _toy_spec(file: str, **fields) -> DatasetSpec:
    """A data set of the synthetic generator's layout (control -> stimulated)."""
    return DatasetSpec(file=file, control="control", perturbed=("stimulated",), description="toy", **fields)


def _split_type_a(adata, counts: bool = False) -> Split:
    """The benchmark's split of a synthetic data set that holds out stimulated type_A (all genes)."""
    spec = _toy_spec("synthetic", kind="counts" if counts else "lognorm", n_top_genes=None)
    return make_split(adata, "synthetic", spec, "type_A", "stimulated", None)


def test_latent_delta_recovers_shift_despite_imbalance():
    rng = np.random.default_rng(0)
    shift = np.array([1.0, -2.0, 0.5])
    offsets = {"a": np.array([0.0, 0.0, 0.0]), "b": np.array([10.0, 5.0, -3.0])}
    # type "a" dominates the source, type "b" the target: an unbalanced mean difference is far off
    sizes = {("a", "ctrl"): 200, ("b", "ctrl"): 10, ("a", "stim"): 10, ("b", "stim"): 200}
    latent, conditions, types = [], [], []
    for (cell_type, condition), n in sizes.items():
        base = offsets[cell_type] + (shift if condition == "stim" else 0.0)
        latent.append(base + 0.01 * rng.standard_normal((n, 3)))
        conditions += [condition] * n
        types += [cell_type] * n
    latent, conditions, types = np.vstack(latent), np.array(conditions), np.array(types)
    naive = latent[conditions == "stim"].mean(0) - latent[conditions == "ctrl"].mean(0)
    assert np.abs(naive - shift).max() > 1.0
    delta = scgen.latent_delta(latent, conditions, types, "ctrl", "stim", rng)
    np.testing.assert_allclose(delta, shift, atol=0.05)


def test_latent_delta_ignores_types_missing_a_condition():
    latent = np.array([[0.0], [0.0], [1.0], [1.0], [100.0]])
    conditions = np.array(["ctrl", "ctrl", "stim", "stim", "ctrl"])
    types = np.array(["a", "a", "a", "a", "held_out"])  # the held-out type has control cells only
    delta = scgen.latent_delta(latent, conditions, types, "ctrl", "stim", np.random.default_rng(0))
    np.testing.assert_allclose(delta, [1.0])


def test_baseline_models_shapes(one_thread):
    adata = synthetic_perturbation(
        n_cell_types=2, n_genes=30, n_cells_per_group=20, n_response_genes=6, n_marker_genes=5, seed=0
    )
    x, conditions = adata.X, adata.obs["condition"].astype(str).to_numpy()
    types = adata.obs["cell_type"].astype(str).to_numpy()
    source = x[conditions == "control"]

    model = scgen.ScGen(n_hidden=32, n_latent=4).fit(x, epochs=1)
    pred = model.predict(x, conditions, types, source, "control", "stimulated")
    assert pred.shape == source.shape and np.isfinite(pred).all() and (pred >= 0).all()

    pred = saucie.SaucieLike(hidden=(32, 16), n_bottleneck=4).fit(x, conditions, epochs=1).predict(source, "stimulated")
    assert pred.shape == source.shape and np.isfinite(pred).all()
    with pytest.raises(ValueError, match="Unknown condition"):
        saucie.SaucieLike(hidden=(8,), n_bottleneck=2).fit(x, conditions, epochs=1).predict(source, "drug")

    gan = cyclegan.CycleGAN(hidden=(16,)).fit(source, x[conditions == "stimulated"], epochs=1)
    pred = gan.predict(source)
    assert pred.shape == source.shape and np.isfinite(pred).all() and (pred >= 0).all()


def test_cyclegan_generator_starts_as_identity():
    generator = cyclegan.ResidualGenerator(5, hidden=(8,))
    x = torch.rand(4, 5)
    torch.testing.assert_close(generator(x), x)


@pytest.mark.parametrize("method", ["trVAE", "scVI", "trVAE (paper network)"])
def test_count_methods_fit_predict(method, one_thread):
    adata = synthetic_perturbation(n_cell_types=2, n_genes=40, n_cells_per_group=25, n_response_genes=6, seed=3)
    split = _split_type_a(adata, counts=True)
    pred = METHODS[method].fit(split, 0, 1)
    assert pred.shape == split.control.shape and np.isfinite(pred).all()
    assert pred.max() < MAX_LOG_EXPRESSION


def test_scvi_not_applicable_to_lognorm_data():
    adata = synthetic_perturbation(
        n_cell_types=2, n_genes=20, n_cells_per_group=5, n_response_genes=4, n_marker_genes=3, seed=0
    )
    with pytest.raises(NotApplicable):
        fit_predict_scvi(_split_type_a(adata), 0, 1)


def test_select_genes_uses_detected_genes_only():
    rng = np.random.default_rng(0)
    x = np.log1p(rng.poisson(2.0, size=(50, 40)).astype(np.float32) * rng.gamma(1.0, 1.0, size=40))
    x[:, :5] = 0.0  # never detected
    mask = select_genes(x, 10)
    assert mask.sum() == 10 and not mask[:5].any()
    assert select_genes(x, None).all()


def test_select_genes_gives_exactly_n_genes_when_dispersions_tie(monkeypatch):
    import pandas as pd
    import scanpy as sc

    # scanpy keeps every gene at or above the n-th normalised dispersion: three genes tied at the cut-off
    norm = np.array([3.0, 0.6745, 2.0, 0.6745, 0.1, 0.6745])
    table = pd.DataFrame({"dispersions_norm": norm, "dispersions": [5.0, 1.0, 4.0, 3.0, 0.5, 2.0]})
    table["highly_variable"] = norm >= 0.6745
    monkeypatch.setattr(sc.pp, "highly_variable_genes", lambda *args, **kwargs: table)
    x = np.ones((10, 6))
    mask = select_genes(x, 3)
    assert mask.tolist() == [True, False, True, True, False, False]  # the tie goes to the larger raw dispersion


def test_count_data_split_holds_out_and_renormalises(tmp_path):
    import anndata as ad

    adata = synthetic_perturbation(n_cell_types=3, n_genes=60, n_cells_per_group=30, n_response_genes=8, seed=4)
    counts = adata.layers["counts"].copy()
    held_out = ((adata.obs["cell_type"] == "type_B") & (adata.obs["condition"] == "stimulated")).to_numpy()
    counts[:, 0] = 0.0
    counts[held_out, 0] = 50.0  # a gene seen only in the held-out cells must not be selected
    raw = ad.AnnData(counts, obs=adata.obs[["condition", "cell_type"]].copy(), var=adata.var[[]].copy())
    raw.write_h5ad(tmp_path / "toy.h5ad")
    spec = _toy_spec("toy.h5ad", kind="counts", n_top_genes=20)

    loaded = load_dataset(spec, tmp_path)
    np.testing.assert_allclose(np.expm1(loaded.X.toarray()).sum(1), TARGET_LIBRARY_SIZE, rtol=1e-3)
    split = make_split(loaded, "toy", spec, "type_B", "stimulated", 20)
    assert split.train.n_vars == 20 and split.train.var_names[0] != raw.var_names[0]
    assert raw.var_names[0] not in split.train.var_names
    assert split.train.n_obs == adata.n_obs - held_out.sum() and split.real_target.n_obs == held_out.sum()
    assert not set(split.real_target.obs_names) & set(split.train.obs_names)
    assert set(split.control.obs_names) <= set(split.train.obs_names)
    # scored on log1p(CP10k) of the selected genes, the scale of the count models' predictions
    np.testing.assert_allclose(np.expm1(split.train.X.toarray()).sum(1), TARGET_LIBRARY_SIZE, rtol=1e-3)
    np.testing.assert_array_equal(
        split.train.layers["counts"].toarray(), counts[~held_out][:, np.isin(raw.var_names, split.train.var_names)]
    )
    assert len(split.degs) == 2 * 20  # 50 up + 50 down, truncated to the 20 genes


def test_load_dataset_caps_cells_per_group(tmp_path):
    import anndata as ad

    adata = synthetic_perturbation(n_cell_types=3, n_genes=60, n_cells_per_group=20, n_response_genes=6, seed=2)
    keep_all = (adata.obs["cell_type"] == "type_C").to_numpy()
    adata = adata[~keep_all | (np.arange(adata.n_obs) % 4 == 0)].copy()  # type_C: 5 cells per condition
    raw = ad.AnnData(adata.layers["counts"], obs=adata.obs[["condition", "cell_type"]].copy(), var=adata.var[[]].copy())
    raw.write_h5ad(tmp_path / "toy.h5ad")
    spec = _toy_spec("toy.h5ad", kind="counts", n_top_genes=None, max_cells_per_group=8)
    first, again = load_dataset(spec, tmp_path), load_dataset(spec, tmp_path)
    sizes = first.obs.groupby(["cell_type", "condition"], observed=True).size()
    expected = raw.obs.groupby(["cell_type", "condition"], observed=True).size().clip(upper=8)
    assert sizes.to_dict() == expected.to_dict() and sizes.min() == 5
    np.testing.assert_array_equal(first.obs_names, again.obs_names)  # seeded: the same cells every run
    np.testing.assert_array_equal(first.layers["counts"].toarray(), raw[first.obs_names].X)


def test_trvae_auto_epochs_is_the_model_default(monkeypatch):
    from scvi_trvae import TRVAE

    seen = []

    def record_train(self, max_epochs=None, **kwargs):
        seen.append(max_epochs)
        raise _StopFit

    class _StopFit(Exception):
        pass

    monkeypatch.setattr(TRVAE, "train", record_train)
    adata = synthetic_perturbation(
        n_cell_types=2, n_genes=20, n_cells_per_group=10, n_response_genes=4, n_marker_genes=3, seed=0
    )
    split = _split_type_a(adata)
    for epochs in (AUTO_EPOCHS, 7):
        with pytest.raises(_StopFit):
            fit_predict_trvae(split, 0, epochs)
    assert seen == [None, 7]


@pytest.mark.skipif(not paths.SCARCHES_PYTHON.exists(), reason="no scArches environment (make scarches-venv)")
@pytest.mark.parametrize(("settings", "counts"), [("defaults", True), ("paper", False)])
def test_scarches_fit_predict(settings, counts, one_thread):
    adata = synthetic_perturbation(n_cell_types=2, n_genes=40, n_cells_per_group=20, n_response_genes=6, seed=1)
    split = _split_type_a(adata, counts=counts)
    pred = fit_predict_scarches(split, 0, 2, settings=settings)
    assert pred.shape == split.control.shape and np.isfinite(pred).all() and (pred >= 0).all()
    if counts:
        assert pred.max() < MAX_LOG_EXPRESSION


def test_epochs_parsing():
    methods = ["trVAE", "scGen", "no response"]
    assert cli.parse_epochs(None, methods, quick=True) == {"trVAE": 3, "scGen": 3, "no response": None}
    assert cli.parse_epochs(["7", "scGen=2"], methods, quick=False) == {"trVAE": 7, "scGen": 2, "no response": None}
    with pytest.raises(SystemExit):
        cli.parse_epochs(["nope=3"], methods, quick=False)


def test_scarches_without_its_environment_is_not_applicable(monkeypatch, tmp_path):
    monkeypatch.setattr(paths, "SCARCHES_PYTHON", tmp_path / "missing" / "python")
    adata = synthetic_perturbation(
        n_cell_types=2, n_genes=20, n_cells_per_group=10, n_response_genes=4, n_marker_genes=3, seed=0
    )
    with pytest.raises(NotApplicable, match="make scarches-venv"):
        fit_predict_scarches(_split_type_a(adata), 0, 1)


def test_register_refuses_a_second_method_of_the_same_name():
    with pytest.raises(ValueError, match="already registered"):
        registry.register("trVAE", fit_predict_trvae, "again")
    assert METHODS["trVAE"].description == "scvi_trvae.TRVAE defaults (MMD on y)"


# ------------------------------------------------------------------------------------------- tuning script
def test_tune_table_marks_old_runs_as_all_genes(tmp_path):
    scores = {name: 0.5 for name in tune.TABLE_METRICS}
    old_run = {"args": {"epochs": 60, "kl": 0.1, "seed": 0}, "counterfactual": scores}
    new_run = {"args": {"genes": 2000, "epochs": "auto", "seed": 1}, "counterfactual": scores, "mean": scores}
    path = tmp_path / "runs.jsonl"
    path.write_text(json.dumps(old_run) + "\n" + json.dumps(new_run) + "\n")
    text = tune.runs_table(path)
    assert len(text.splitlines()) == 2 + 3  # header, rule, one row per (run, prediction mode)
    header, *rows = table_rows(text)
    assert rows[0][:3] == ["all", "60", "0.1"] and rows[0][header.index("mode")] == "counterfactual"
    assert rows[0][header.index("mode") + 1] == "0.500"
    assert rows[1][:2] == ["2000", "auto"] and rows[2][header.index("mode")] == "mean"


def test_tune_once_scores_the_benchmark_split(one_thread):
    if not KANG.exists():
        pytest.skip(f"shared data not found: {KANG}")
    small = ["--epochs", "1", "--hidden", "32", "--latent", "4", "--threads", "1", "--data-dir", str(SHARED_DATA)]
    result = tune.tune_once(tune.build_parser().parse_args(small))
    assert result["n_genes"] == 2000 and result["epochs_trained"] == 1
    for mode in ("counterfactual", "mean"):
        assert set(result[mode]) == set(tune.TABLE_METRICS)
        assert all(math.isfinite(value) for value in result[mode].values())


# ------------------------------------------------------------------------------------------- quick mode
@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    if not KANG.exists():
        pytest.skip(f"shared data not found: {KANG}")
    out = tmp_path_factory.mktemp("quick")
    argv = ["--quick", "--threads", "1", "--output-dir", str(out), "--cache-dir", str(out / "cache")]
    with _restoring_threads():
        rows = cli.main(argv)
    return out, argv, rows


@pytest.mark.slow  # the benchmark's --quick run on real data (~20 s)
def test_quick_mode_rows(quick_run):
    out, _, rows = quick_run
    payload = json.loads((out / "out_of_sample.json").read_text())
    assert payload["quick"] and len(payload["rows"]) == len(rows)
    by_method = {row["method"]: row for row in payload["rows"]}
    assert set(by_method) == set(METHODS)
    for name, row in by_method.items():
        assert (row["dataset"], row["cell_type"], row["target"]) == ("kang", "NK", "stimulated")
        if row["status"] == "not run":
            assert row["reason"], name
            continue
        assert row["status"] == "ok", (name, row.get("reason"))
        assert row["n_genes"] == 500 and row["n_target"] == 646 and row["n_control"] == 517
        keys = [k for k in METRIC_KEYS if not (name == "no response" and k.startswith("pearson_delta"))]
        assert all(row[k] is not None and math.isfinite(row[k]) for k in keys), name
        assert row["fit_seconds"] >= 0
    scarches_status = "ok" if paths.SCARCHES_PYTHON.exists() else "not run"
    assert by_method["scArches trVAE"]["status"] == by_method["scArches trVAE (paper)"]["status"] == scarches_status
    assert by_method["scVI"]["status"] == "not run"  # log-normalised data set
    assert by_method["no response"]["edist_scaled"] == pytest.approx(1.0)
    assert by_method["trVAE"]["epochs"] == 3


@pytest.mark.slow  # the benchmark's --quick run on real data (~20 s)
def test_quick_mode_markdown_and_figures(quick_run):
    out, _, _ = quick_run
    text = (out / "benchmarks.md").read_text()
    assert has_row(text, "method", "seeds", "splits")
    for name in ("trVAE", "scGen", "control + mean shift", "no response"):
        assert has_row(text, name)
    assert "not run" in text and "Published numbers" in text and "quick mode" in text
    assert {p.name for p in (out / "figures").glob("*.png")} == {
        f"kang_NK_stimulated_{what}.png" for what in ("reg_mean", "reg_var", "genes")
    }


@pytest.mark.slow  # the benchmark's --quick run on real data (~20 s)
def test_figures_are_not_redrawn_without_the_trvae_predictions(quick_run, tmp_path):
    out, argv, _ = quick_run
    cache_copy = tmp_path / "cache"
    shutil.copytree(out / "cache", cache_copy)
    removed = list(cache_copy.rglob("*__trVAE__seed0.npy"))
    assert removed and list(cache_copy.rglob("*.npy")) != removed  # other methods' predictions stay
    for path in removed:
        path.unlink()
    with _restoring_threads():
        cli.main([*argv[:3], "--output-dir", str(tmp_path / "out"), "--cache-dir", str(cache_copy), "--cached-only"])
    assert (tmp_path / "out" / "benchmarks.md").exists()
    assert not list((tmp_path / "out").rglob("*.png"))


@pytest.mark.slow  # the benchmark's --quick run on real data (~20 s)
def test_quick_mode_resumes_from_cache(quick_run):
    out, argv, first = quick_run
    with _restoring_threads():
        rows = cli.main(
            [*argv[:3], "--output-dir", str(out / "resumed"), "--cache-dir", str(out / "cache"), "--no-figures"]
        )
    resumed = [row for row in rows if row["status"] == "ok"]
    assert [row["method"] for row in resumed] == [row["method"] for row in first if row["status"] == "ok"]
    assert "trVAE" in {row["method"] for row in resumed} and all(row["cached"] for row in resumed)
    assert [row["edist_scaled"] for row in resumed] == [row["edist_scaled"] for row in first if row["status"] == "ok"]


@pytest.mark.slow  # the benchmark's --quick run on real data (~20 s)
def test_rebuild_cache_from_results_file_restores_every_cached_result(quick_run, tmp_path):
    out, _, _ = quick_run
    n_written = cache.rebuild_cache(out / "out_of_sample.json", SHARED_DATA, tmp_path)
    originals = sorted((out / "cache" / "kang").glob("*.json"))
    assert n_written == len(originals) > 0
    for original in originals:
        assert (tmp_path / "kang" / original.name).read_text() == original.read_text(), original.name


@pytest.mark.slow  # the benchmark's --quick run on real data (~20 s)
def test_results_without_code_versions_are_rebuilt_as_earlier_and_reported_stale(quick_run, tmp_path):
    out, argv, _ = quick_run
    payload = json.loads((out / "out_of_sample.json").read_text())
    assert all(row["code_version"] for row in payload["rows"] if row["status"] == "ok")
    for row in payload["rows"]:  # a results file written before code versions were recorded
        row.pop("code_version", None)
    old = tmp_path / "old.json"
    old.write_text(json.dumps(payload))
    assert cache.rebuild_cache(old, SHARED_DATA, tmp_path / "cache") > 0
    rebuilt = [json.loads(p.read_text()) for p in (tmp_path / "cache" / "kang").glob("*.json")]
    assert {r["key"]["code_version"] for r in rebuilt} == {r["code_version"] for r in rebuilt} == {cache.EARLIER_CODE}
    with _restoring_threads():
        rows = cli.main([*argv[:3], "--output-dir", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"),
                         "--no-figures", "--cached-only"])  # fmt: skip
    ok = [r for r in rows if r["status"] == "ok"]
    assert ok and all(r["stale"] for r in ok)
    text = (tmp_path / "out" / "benchmarks.md").read_text()
    assert "Results from earlier code" in text and has_row(text, "trVAE", "1/1", cache.EARLIER_CODE)


def test_cached_only_reports_the_cache_and_fits_nothing(quick_run):
    out, argv, first = quick_run
    with _restoring_threads():
        cached = cli.main([*argv[:3], "--output-dir", str(out / "cached"), "--cache-dir", str(out / "cache"),
                           "--no-figures", "--cached-only"])  # fmt: skip
        empty = cli.main([*argv[:3], "--output-dir", str(out / "empty"), "--cache-dir", str(out / "no-cache"),
                          "--no-figures", "--cached-only"])  # fmt: skip
    # a failure is not cached (the next run tries again): --cached-only reports it as not run
    assert [r["status"] for r in cached] == [s if (s := r["status"]) != "failed" else "not run" for r in first]
    fitted = [r for r in empty if not METHODS[r["method"]].counts_only]
    assert fitted and all(r["status"] == "not run" for r in fitted)
    # a method that could not run here says why (CellFlow: its scale; a peer: its missing environment)
    reasons = {r["method"]: r["reason"] for r in fitted}
    assert "500,000 iterations" in reasons["CellFlow"] and "not in the cache" in reasons["trVAE"]
    assert all("not in the cache" in why or "environment" in why for name, why in reasons.items() if name != "CellFlow")


# ------------------------------------------------------------------------------------------- MMD bandwidths
def test_mmd_bandwidths_quick_reports_gradient_shares(tmp_path):
    result = mmd_bandwidths.main(["--quick", "--output", str(tmp_path / "mmd.json")])
    assert result["data"] == "synthetic" and result["epochs"] == 1
    for name, n_bandwidths in (("legacy", 19), ("adaptive", 6)):
        kernel = result["kernels"][name]
        assert kernel["n_bandwidths"] == len(kernel["gradient_share"]) == n_bandwidths
        assert sum(kernel["gradient_share"]) == pytest.approx(1.0)
        assert all(0.0 <= share <= 1.0 for share in kernel["gradient_share"])
    legacy = result["kernels"]["legacy"]
    inert = [s for s, f in zip(legacy["gradient_share"], legacy["informative_fraction"], strict=True) if f == 0.0]
    assert inert and max(inert) < 0.01  # a bandwidth whose kernel values are all ~0 or ~1 carries no gradient
    assert json.loads((tmp_path / "mmd.json").read_text())["kernels"]["adaptive"]["gradient_share"]
