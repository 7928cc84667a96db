"""The ``scvi-trvae`` command line: ``train``, ``predict``, ``evaluate`` and ``demo``.

Every command uses the package's public API only (:class:`~scvi_trvae.TRVAE`, :mod:`~scvi_trvae.metrics`,
:mod:`~scvi_trvae.baselines`, :mod:`~scvi_trvae.pl`). Bad input (a missing file, key or condition, a folder
that holds no model, an output that exists without ``--overwrite``) ends the command with a one-line
``Error: ...`` on stderr and exit status 1. Outputs are written beside their path and moved into place whole.

Every command speaks of the same things with the same options: ``--condition-key``, ``--cell-type-key``,
``--cell-type``, ``--source`` and ``--target``; the earlier names (``--holdout-key``, ``--cells``,
``--control``, ...) are still accepted (:data:`scvi_trvae.cli._support.OLD_OPTION_NAMES`).
Torch, scvi-tools and anndata are imported inside the commands, so ``--help`` and argument errors answer at once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from scvi_trvae import __version__
from scvi_trvae.demo import MEAN_SHIFT, format_table, score_methods, verdict
from scvi_trvae.demo import run as demo_run

from ._predict import check_ensemble_options, load_model, predict_in_chunks, with_model_genes
from ._support import TRAINING_RECORD, CliError, Command, check_values, obs_values, read_h5ad, staged_output

if TYPE_CHECKING:
    import anndata as ad
    import numpy as np

    from scvi_trvae._ensemble import TRVAEEnsemble
    from scvi_trvae.model._model import TRVAE

app = typer.Typer(
    name="scvi-trvae",
    help="trVAE out-of-sample perturbation prediction: train a model, predict held-out cells, score them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

#: The options every command shares, with one meaning each.
_CONDITION_KEY = typer.Option(help="obs column with each cell's condition.")
_CELL_TYPE_KEY = typer.Option(help="obs column with each cell's type.")
_OVERWRITE = typer.Option("--overwrite", help="Replace an existing output.")


class Likelihood(StrEnum):
    """Reconstruction likelihoods of :class:`~scvi_trvae.TRVAE`."""

    mse = "mse"
    nb = "nb"
    zinb = "zinb"


class Mode(StrEnum):
    """Prediction modes of :meth:`~scvi_trvae.TRVAE.predict_perturbation`."""

    counterfactual = "counterfactual"
    mean = "mean"


@contextmanager
def _one_line_errors() -> Iterator[None]:
    """Turn bad-input exceptions into ``Error: <message>`` on stderr and exit status 1."""
    try:
        yield
    except (CliError, ValueError, KeyError, FileNotFoundError, OSError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        typer.echo(f"Error: {' '.join(str(message).split())}", err=True)
        raise typer.Exit(1) from None


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"scvi-trvae {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """TrVAE out-of-sample perturbation prediction: train a model, predict held-out cells, score them."""


# ------------------------------------------------------------------------------------------------------------ train
def _holdout_mask(
    adata: ad.AnnData, path: Path, condition_key: str, key: str | None, value: str | None, condition: str | None
) -> np.ndarray:
    """Boolean mask of the cells to hold out of training (none when no hold-out is asked for)."""
    import numpy as np

    given = [x is not None for x in (key, value, condition)]
    if not any(given):
        return np.zeros(adata.n_obs, dtype=bool)
    if not all(given):
        raise CliError("--cell-type-key, --cell-type and --target go together: give all three or none")
    groups, conditions = obs_values(adata, key, path), obs_values(adata, condition_key, path)
    check_values(groups, [value], key)
    check_values(conditions, [condition], condition_key)
    mask = (groups == value) & (conditions == condition)
    if not mask.any():
        raise CliError(f"no cells with {key} == {value!r} in {condition_key} == {condition!r} to hold out")
    return mask


@app.command(cls=Command)
def train(
    data: Annotated[
        Path, typer.Argument(metavar="DATA", help="Training data (.h5ad): log-normalised X, or counts with --counts.")
    ],
    condition_key: Annotated[str, _CONDITION_KEY],
    out: Annotated[Path, typer.Option(help="Folder to save the trained model to.")],
    layer: Annotated[str | None, typer.Option(help="Layer to train on instead of X.")] = None,
    counts: Annotated[bool, typer.Option("--counts", help="The data are raw counts (default likelihood nb).")] = False,
    likelihood: Annotated[Likelihood | None, typer.Option(help="Default: nb with --counts, else mse.")] = None,
    cell_type_key: Annotated[str | None, _CELL_TYPE_KEY] = None,
    cell_type: Annotated[str | None, typer.Option(help="Cell type whose --target cells are held out.")] = None,
    target: Annotated[str | None, typer.Option(help="Condition whose --cell-type cells are held out.")] = None,
    max_epochs: Annotated[int | None, typer.Option(min=1, help="Default: about 1,500 minibatch steps.")] = None,
    batch_size: Annotated[int, typer.Option(min=2)] = 128,
    accelerator: Annotated[str, typer.Option(help="Lightning accelerator: auto, cpu, gpu, ...")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed of scvi-tools (weights, splits, minibatches).")] = 0,
    members: Annotated[int, typer.Option(min=1, help="Seeds of an ensemble (TRVAEEnsemble); 1: one model.")] = 1,
    source: Annotated[
        str | None,
        typer.Option(
            help="Run the recommended pipeline: choose the ensemble's shift weight for --source -> --target "
            "by inner held-out cell types of --cell-type-key (log-normalised data)."
        ),
    ] = None,
    overwrite: Annotated[bool, _OVERWRITE] = False,
) -> None:
    """Train trVAE on DATA without the held-out cells and save it to --out.

    The held-out cells (--cell-type-key == --cell-type in --target) are removed before the model sees the
    data; their names are recorded in the model folder's scvi_trvae_training.json. With --members or
    --source an ensemble is saved, with its training cells (its shift blending needs them). The model
    folder appears only when training has finished.
    """
    with _one_line_errors(), staged_output(out, overwrite=overwrite, directory=True) as staging:
        adata = read_h5ad(data)
        conditions = obs_values(adata, condition_key, data)
        held_out = _holdout_mask(adata, data, condition_key, cell_type_key, cell_type, target)
        if layer is not None and layer not in adata.layers:
            raise CliError(f"no layer {layer!r} in {data}; layers: {list(adata.layers)}")
        if source is not None:
            count_data = counts if likelihood is None else likelihood is not Likelihood.mse
            _check_pipeline(conditions, condition_key, source, cell_type_key, count_data, batch_size)
        training = adata[~held_out].copy()
        typer.echo(
            f"Data: {adata.n_obs} cells x {adata.n_vars} genes, {len(set(conditions))} conditions; "
            f"{int(held_out.sum())} cells held out, training on {training.n_obs}."
        )
        model = _train_model(training, condition_key, cell_type_key, source, target, layer, counts, likelihood,
                             members, batch_size, max_epochs, accelerator, seed)  # fmt: skip
        # an ensemble's blending needs its training cells
        model.save(str(staging), overwrite=True, save_anndata=not _is_single(model))
        holdout_settings = {"key": cell_type_key, "value": cell_type, "condition": target}
        record = _training_record(data, adata, held_out, holdout_settings, model, condition_key, layer, counts, seed)
        (staging / TRAINING_RECORD).write_text(json.dumps(record, indent=1))
    what = "the model"
    if not _is_single(model):
        what = (
            f"{members} members (w = {model.shift_weight:g}, lambda = {model.deviation_weight:g}, "
            f"{model.reference_shift} reference shift{', spread scaled' if model.spread_scaling else ''})"
        )
    typer.echo(f"Trained {record['epochs']} epochs; saved {what} to {out}.")


def _train_model(training, condition_key, cell_type_key, source, target, layer, counts, likelihood, members,
                 batch_size, max_epochs, accelerator, seed) -> TRVAE | TRVAEEnsemble:  # fmt: skip
    """Train one model, an ensemble, or the recommended pipeline (``source`` given) on ``training``."""
    import scvi

    from scvi_trvae import model_selection

    scvi.settings.seed = seed
    fit = {"max_epochs": max_epochs, "accelerator": accelerator, "enable_progress_bar": True, "seed": seed}
    if source is not None:
        model, _ = model_selection.fit_recommended(
            training, cell_type_key=cell_type_key, condition_key=condition_key, source=source, target=target,
            n_members=members, setup_kwargs={"layer": layer}, **fit,
        )  # fmt: skip
        return model
    model_kwargs = {} if likelihood is None else {"likelihood": likelihood.value}
    setup_kwargs = {"condition_key": condition_key, "layer": layer, "is_count_data": counts}
    return _fit(training, setup_kwargs, members, model_kwargs, batch_size=batch_size, **fit)


def _is_single(model: TRVAE | TRVAEEnsemble) -> bool:
    from scvi_trvae.model._model import TRVAE

    return isinstance(model, TRVAE)


def _training_record(data, adata, held_out, holdout_settings, model, condition_key, layer, counts, seed) -> dict:
    """Collect what ``train`` writes to :data:`TRAINING_RECORD`: the data, keys, held-out cells and settings."""
    ensemble = None if _is_single(model) else model
    first = _first_model(model)
    return {
        "data": str(data.resolve()),
        "condition_key": condition_key,
        "layer": layer,
        "counts": counts,
        "likelihood": first.module.likelihood,
        "holdout": {**holdout_settings, "n_cells": int(held_out.sum()), "cells": adata.obs_names[held_out].tolist()},
        "n_training_cells": first.adata.n_obs,
        "epochs": len(first.history["train_loss"]),
        "seed": seed,
        "members": None if ensemble is None else ensemble.n_members,
        "shift_weight": None if ensemble is None else ensemble.shift_weight,
        "deviation_weight": None if ensemble is None else ensemble.deviation_weight,
        "reference_shift": None if ensemble is None else ensemble.reference_shift,
        "spread_scaling": None if ensemble is None else ensemble.spread_scaling,
        "version": __version__,
    }


def _check_pipeline(
    conditions: np.ndarray, condition_key: str, source: str, cell_type_key: str | None, count_data: bool,
    batch_size: int,
) -> None:  # fmt: skip
    """Refuse options that the recommended pipeline (--source) cannot honour."""
    from scvi_trvae import model_selection

    if cell_type_key is None:
        raise CliError("--source needs --cell-type-key (the cell types), --cell-type and --target (the held-out cells)")
    check_values(conditions, [source], condition_key)
    if count_data:
        raise CliError("--source blends shifts of log-normalised data; it cannot be used with counts or nb/zinb")
    if batch_size != model_selection.BATCH_SIZE:
        raise CliError(f"--source trains with minibatches of {model_selection.BATCH_SIZE} cells; drop --batch-size")


def _fit(
    training, setup_kwargs: dict, members: int, model_kwargs: dict, *, seed: int, **train_kwargs
) -> TRVAE | TRVAEEnsemble:
    """Set ``training`` up, then train one model, or an ensemble of ``members`` seeds from ``seed``."""
    from scvi_trvae._ensemble import TRVAEEnsemble
    from scvi_trvae.model._model import TRVAE

    TRVAE.setup_anndata(training, **setup_kwargs)
    if members == 1:
        model = TRVAE(training, **model_kwargs)
    else:
        model = TRVAEEnsemble(training, seeds=range(seed, seed + members), **model_kwargs)
    model.train(**train_kwargs)
    return model


def _first_model(model: TRVAE | TRVAEEnsemble) -> TRVAE:
    """Return the model itself, or an ensemble's first member (whose keys and conditions are the ensemble's)."""
    return model if _is_single(model) else model.members[0]


# ---------------------------------------------------------------------------------------------------------- predict
@app.command(cls=Command)
def predict(
    model_dir: Annotated[Path, typer.Argument(metavar="MODEL_DIR", help="Folder written by `scvi-trvae train`.")],
    data: Annotated[Path, typer.Argument(metavar="DATA", help="Cells to predict from (.h5ad with the model's genes).")],
    source: Annotated[str, typer.Option(help="Condition of the cells to start from.")],
    target: Annotated[str, typer.Option(help="Condition to predict.")],
    out: Annotated[Path, typer.Option(help="Where to write the predicted cells (.h5ad).")],
    cell_type_key: Annotated[str | None, _CELL_TYPE_KEY] = None,
    cell_type: Annotated[
        list[str] | None, typer.Option(help="Cell type(s) of --cell-type-key to predict; repeatable.")
    ] = None,
    n_samples: Annotated[int, typer.Option(min=0, help="0: posterior mean z; k: k draws of z per cell.")] = 0,
    mode: Annotated[
        Mode, typer.Option(help="counterfactual (keeps each cell's residual) or mean.")
    ] = Mode.counterfactual,
    seed: Annotated[int, typer.Option(help="Seed of the draws when --n-samples > 0.")] = 0,
    overwrite: Annotated[bool, _OVERWRITE] = False,
) -> None:
    """Predict how DATA's --source cells would look under --target with a trained model."""
    import numpy as np

    with _one_line_errors(), staged_output(out, overwrite=overwrite, directory=False) as staging:
        if (cell_type_key is None) != (not cell_type):
            raise CliError("--cell-type-key and --cell-type go together")
        model = load_model(model_dir)
        first = _first_model(model)
        if not _is_single(model):
            check_ensemble_options(model, cell_type_key, n_samples, mode)
        adata = with_model_genes(read_h5ad(data), first.var_names_, data, model_dir)
        conditions = obs_values(adata, first.condition_key, data)
        check_values(conditions, [source], first.condition_key)
        known = [str(c) for c in first.conditions]
        if target not in known:
            raise CliError(f"the model does not know condition {target!r}; it knows {known}")
        selected = conditions == source
        if cell_type_key is not None:
            groups = obs_values(adata, cell_type_key, data)
            check_values(groups, cell_type, cell_type_key)
            selected &= np.isin(groups, cell_type)
        if not selected.any():
            raise CliError(f"no {source!r} cells among the selected cells of {data}")
        indices = np.flatnonzero(selected)
        if not _is_single(model):  # one call: the members' spread per gene is over all predicted cells
            if cell_type_key is not None:  # the blend's groups (ensembles saved before labels_key lack them)
                model.labels_key = cell_type_key
            prediction = model.predict_perturbation(adata, source=source, target=target, indices=indices)
        else:
            prediction = predict_in_chunks(model, adata, indices, source, target, n_samples, mode, seed)
        prediction.write_h5ad(staging)
    typer.echo(f"Predicted {prediction.n_obs} cells ({source} -> {target}); wrote {out}.")


# --------------------------------------------------------------------------------------------------------- evaluate
@app.command(cls=Command)
def evaluate(
    prediction: Annotated[
        Path, typer.Argument(metavar="PRED", help="Predicted cells (.h5ad from `scvi-trvae predict`).")
    ],
    data: Annotated[Path, typer.Argument(metavar="DATA", help="Real cells (.h5ad) with the held-out target cells.")],
    condition_key: Annotated[str, _CONDITION_KEY],
    cell_type_key: Annotated[str, _CELL_TYPE_KEY],
    cell_type: Annotated[str, typer.Option(help="The held-out cell type of --cell-type-key.")],
    source: Annotated[str, typer.Option(help="Condition predicted from.")],
    target: Annotated[str, typer.Option(help="Condition predicted.")],
    out_dir: Annotated[Path, typer.Option(help="Folder for scores.json and the figures.")] = Path("trvae_evaluation"),
    n_degs: Annotated[int, typer.Option(min=2, help="Top DEGs (half up, half down) of the DEG metrics.")] = 100,
    seed: Annotated[int, typer.Option(help="Seed of the E-distance's PCA and subsampling.")] = 0,
    overwrite: Annotated[bool, _OVERWRITE] = False,
) -> None:
    """Score a prediction against the real held-out cells, beside the no-response and mean-shift baselines.

    Prints the metrics table and who won on each metric, writes scores.json and the reg-mean, reg-var and
    top-gene figures to --out-dir.
    """
    from scvi_trvae import baselines, datasets, metrics

    with _one_line_errors(), staged_output(out_dir, overwrite=overwrite, directory=True) as staging:
        pred, real = read_h5ad(prediction), read_h5ad(data)
        missing = pred.var_names.difference(real.var_names)
        if len(missing):
            raise CliError(f"{len(missing)} predicted genes are not in {data}, e.g. {list(missing[:3])}")
        real = real[:, pred.var_names]
        groups, conditions = obs_values(real, cell_type_key, data), obs_values(real, condition_key, data)
        check_values(groups, [cell_type], cell_type_key)
        check_values(conditions, [source, target], condition_key)
        keys = {"cell_type_key": cell_type_key, "condition_key": condition_key, "cell_type": cell_type}
        split = datasets.holdout_split(real, source=source, target=target, **keys)
        real_target, real_control, training_like = split.real_target, split.control, split.train
        predictions = {
            "trVAE": pred,
            MEAN_SHIFT: baselines.mean_shift(training_like, source=source, target=target, **keys),
            "no response": baselines.no_response(training_like, source=source, target=target, **keys),
        }
        degs = metrics.top_degs(real_target, real_control, n_up=n_degs // 2, n_down=n_degs // 2)
        scores = score_methods(predictions, real_target, real_control, degs=degs, seed=seed)
        typer.echo(f"{cell_type}: {source} -> {target}, {pred.n_obs} predicted vs {real_target.n_obs} real cells")
        typer.echo(format_table(scores))
        typer.echo(verdict(scores, "trVAE"))
        _write_evaluation(staging, scores, pred, real_target, real_control, degs, title=f"{cell_type} {target}")
    typer.echo(f"Wrote scores.json, reg_mean.png, reg_var.png and top_genes.png to {out_dir}.")


def _write_evaluation(out_dir, scores, pred, real_target, real_control, degs, title: str) -> None:
    """Write ``scores.json`` and the reg-mean, reg-var and top-gene figures."""
    import matplotlib

    from scvi_trvae import pl

    matplotlib.use("Agg")
    (out_dir / "scores.json").write_text(json.dumps(scores, indent=1))
    figures = {"reg_mean.png": pl.reg_mean_plot, "reg_var.png": pl.reg_var_plot}
    for name, plot in figures.items():
        plot(pred, real_target, real_control, degs=degs, show=False, save=out_dir / name, title=f"trVAE: {title}")
    top_genes = list(real_target.var_names[degs[:3]])
    groups = {"control": real_control, "real": real_target, "trVAE": pred}
    pl.gene_distribution_plot(groups, top_genes, show=False, save=out_dir / "top_genes.png")


# ------------------------------------------------------------------------------------------------------------- demo
app.command("demo", cls=Command)(demo_run)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point of ``scvi-trvae``."""
    app(args=None if argv is None else list(argv), prog_name="scvi-trvae")
