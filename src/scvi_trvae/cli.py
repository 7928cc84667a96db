"""The ``scvi-trvae`` command line: ``train``, ``predict``, ``evaluate`` and ``demo``.

Every command uses the package's public API only (:class:`~scvi_trvae.TRVAE`, :mod:`~scvi_trvae.metrics`,
:mod:`~scvi_trvae.baselines`, :mod:`~scvi_trvae.pl`). Bad input (a missing file, key or condition, a folder
that holds no model) ends the command with a one-line ``Error: ...`` on stderr and exit status 1.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import anndata as ad
import matplotlib
import numpy as np
import scvi
import typer
from rich.progress import Progress

from . import __version__, baselines, datasets, metrics, model_selection, pl
from ._ensemble import TRVAEEnsemble
from ._model import TRVAE
from .demo import format_table, score_methods
from .demo import main as demo_main

TRAINING_RECORD = "scvi_trvae_training.json"
"""File written beside the saved model by ``train``: the data, keys, held-out cells and settings used."""

_PREDICTION_CHUNK = 5_000

app = typer.Typer(
    name="scvi-trvae",
    help="trVAE out-of-sample perturbation prediction: train a model, predict held-out cells, score them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


class CliError(Exception):
    """Bad input to a command: reported as one line, without a traceback."""


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


def _read_h5ad(path: Path) -> ad.AnnData:
    if not path.is_file():
        raise CliError(f"no such file: {path}")
    try:
        return ad.read_h5ad(path)
    except Exception as err:  # h5py/anndata raise many types for a file that is not an .h5ad
        raise CliError(f"{path} is not a readable .h5ad file ({type(err).__name__}: {err})") from err


def _obs_values(adata: ad.AnnData, key: str, path: Path) -> np.ndarray:
    if key not in adata.obs:
        raise CliError(f"{key!r} is not an obs column of {path}; columns: {', '.join(map(str, adata.obs.columns))}")
    return adata.obs[key].astype(str).to_numpy()


def _check_values(values: np.ndarray, wanted: Sequence[str], key: str) -> None:
    present = set(values)
    unknown = [v for v in wanted if v not in present]
    if unknown:
        raise CliError(f"unknown {key} value(s) {unknown}; present: {sorted(present)}")


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
    given = [x is not None for x in (key, value, condition)]
    if not any(given):
        return np.zeros(adata.n_obs, dtype=bool)
    if not all(given):
        raise CliError("--holdout-key, --holdout and --holdout-condition go together: give all three or none")
    groups, conditions = _obs_values(adata, key, path), _obs_values(adata, condition_key, path)
    _check_values(groups, [value], key)
    _check_values(conditions, [condition], condition_key)
    mask = (groups == value) & (conditions == condition)
    if not mask.any():
        raise CliError(f"no cells with {key} == {value!r} in {condition_key} == {condition!r} to hold out")
    return mask


@app.command()
def train(
    data: Annotated[
        Path, typer.Argument(metavar="DATA", help="Training data (.h5ad): log-normalised X, or counts with --counts.")
    ],
    condition_key: Annotated[str, typer.Option(help="obs column with each cell's condition.")],
    out: Annotated[Path, typer.Option(help="Folder to save the trained model to.")],
    layer: Annotated[str | None, typer.Option(help="Layer to train on instead of X.")] = None,
    counts: Annotated[bool, typer.Option("--counts", help="The data are raw counts (default likelihood nb).")] = False,
    likelihood: Annotated[Likelihood | None, typer.Option(help="Default: nb with --counts, else mse.")] = None,
    holdout_key: Annotated[str | None, typer.Option(help="obs column of the group to hold out (cell type).")] = None,
    holdout: Annotated[str | None, typer.Option(help="Value of --holdout-key to hold out.")] = None,
    holdout_condition: Annotated[str | None, typer.Option(help="Condition whose --holdout cells are held out.")] = None,
    max_epochs: Annotated[int | None, typer.Option(min=1, help="Default: about 1,500 minibatch steps.")] = None,
    batch_size: Annotated[int, typer.Option(min=2)] = 128,
    accelerator: Annotated[str, typer.Option(help="Lightning accelerator: auto, cpu, gpu, ...")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed of scvi-tools (weights, splits, minibatches).")] = 0,
    members: Annotated[int, typer.Option(min=1, help="Seeds of an ensemble (TRVAEEnsemble); 1: one model.")] = 1,
    shift_source: Annotated[
        str | None,
        typer.Option(
            help="Run the recommended pipeline: choose the ensemble's shift weight for --shift-source -> "
            "--holdout-condition by inner held-out cell types of --holdout-key (log-normalised data)."
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing model folder.")] = False,
) -> None:
    """Train trVAE on DATA without the held-out cells and save it to --out.

    The held-out cells (--holdout-key == --holdout in --holdout-condition) are removed before the model sees the
    data; their names are recorded in the model folder's scvi_trvae_training.json. With --members or
    --shift-source an ensemble is saved, with its training cells (its shift blending needs them).
    """
    with _one_line_errors():
        if out.exists() and any(out.iterdir()) and not overwrite:
            raise CliError(f"{out} exists and is not empty; pass --overwrite to replace it")
        adata = _read_h5ad(data)
        conditions = _obs_values(adata, condition_key, data)
        held_out = _holdout_mask(adata, data, condition_key, holdout_key, holdout, holdout_condition)
        if layer is not None and layer not in adata.layers:
            raise CliError(f"no layer {layer!r} in {data}; layers: {list(adata.layers)}")
        if shift_source is not None:
            count_data = counts if likelihood is None else likelihood is not Likelihood.mse
            _check_pipeline(conditions, condition_key, shift_source, holdout_key, count_data, batch_size)
        training = adata[~held_out].copy()
        typer.echo(
            f"Data: {adata.n_obs} cells x {adata.n_vars} genes, {len(set(conditions))} conditions; "
            f"{int(held_out.sum())} cells held out, training on {training.n_obs}."
        )
        scvi.settings.seed = seed
        fit = {"max_epochs": max_epochs, "accelerator": accelerator, "enable_progress_bar": True, "seed": seed}
        model_kwargs = {} if likelihood is None else {"likelihood": likelihood.value}
        if shift_source is not None:
            model, _ = model_selection.fit_recommended(
                training, cell_type_key=holdout_key, condition_key=condition_key, source=shift_source,
                target=holdout_condition, n_members=members, setup_kwargs={"layer": layer}, **fit,
            )  # fmt: skip
        else:
            setup_kwargs = {"condition_key": condition_key, "layer": layer, "is_count_data": counts}
            model = _fit(training, setup_kwargs, members, model_kwargs, batch_size=batch_size, **fit)
        # a non-empty folder was refused above unless --overwrite; an ensemble's blending needs its training cells
        model.save(str(out), overwrite=True, save_anndata=isinstance(model, TRVAEEnsemble))
        holdout_settings = {"key": holdout_key, "value": holdout, "condition": holdout_condition}
        record = _training_record(data, adata, held_out, holdout_settings, model, condition_key, layer, counts, seed)
        (out / TRAINING_RECORD).write_text(json.dumps(record, indent=1))
        what = "the model"
        if isinstance(model, TRVAEEnsemble):
            what = f"{members} members (w = {model.shift_weight:g}, lambda = {model.deviation_weight:g})"
        typer.echo(f"Trained {record['epochs']} epochs; saved {what} to {out}.")


def _training_record(data, adata, held_out, holdout_settings, model, condition_key, layer, counts, seed) -> dict:
    """Collect what ``train`` writes to :data:`TRAINING_RECORD`: the data, keys, held-out cells and settings."""
    ensemble = model if isinstance(model, TRVAEEnsemble) else None
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
        "version": __version__,
    }


def _check_pipeline(
    conditions: np.ndarray, condition_key: str, shift_source: str, holdout_key: str | None, count_data: bool,
    batch_size: int,
) -> None:  # fmt: skip
    """Refuse options that the recommended pipeline (--shift-source) cannot honour."""
    if holdout_key is None:
        raise CliError("--shift-source needs --holdout-key (the cell types) and --holdout-condition (the target)")
    _check_values(conditions, [shift_source], condition_key)
    if count_data:
        raise CliError("--shift-source blends shifts of log-normalised data; it cannot be used with counts or nb/zinb")
    if batch_size != model_selection.BATCH_SIZE:
        raise CliError(
            f"--shift-source trains with minibatches of {model_selection.BATCH_SIZE} cells; drop --batch-size"
        )


def _fit(
    training, setup_kwargs: dict, members: int, model_kwargs: dict, *, seed: int, **train_kwargs
) -> TRVAE | TRVAEEnsemble:
    """Set ``training`` up, then train one model, or an ensemble of ``members`` seeds from ``seed``."""
    TRVAE.setup_anndata(training, **setup_kwargs)
    if members == 1:
        model = TRVAE(training, **model_kwargs)
    else:
        model = TRVAEEnsemble(training, seeds=range(seed, seed + members), **model_kwargs)
    model.train(**train_kwargs)
    return model


def _first_model(model: TRVAE | TRVAEEnsemble) -> TRVAE:
    """Return the model itself, or an ensemble's first member (whose keys and conditions are the ensemble's)."""
    return model.members[0] if isinstance(model, TRVAEEnsemble) else model


# ---------------------------------------------------------------------------------------------------------- predict
def _load_model(model_dir: Path):
    if not model_dir.is_dir():
        raise CliError(f"no such model folder: {model_dir}")
    try:
        return TRVAEEnsemble.load(model_dir)  # `train` saves an ensemble with its training cells
    except FileNotFoundError:  # no ensemble manifest: a single model
        pass
    try:
        return TRVAE.load(str(model_dir), adata=False)  # `train` saves a single model without its AnnData
    except Exception as err:  # scvi-tools raises several types for a folder without a valid model
        reason = " ".join(str(err).split()) or type(err).__name__
        raise CliError(f"{model_dir} does not hold a saved scvi-trvae model ({reason})") from err


@app.command()
def predict(
    model_dir: Annotated[Path, typer.Argument(metavar="MODEL_DIR", help="Folder written by `scvi-trvae train`.")],
    data: Annotated[Path, typer.Argument(metavar="DATA", help="Cells to predict from (.h5ad with the model's genes).")],
    source: Annotated[str, typer.Option(help="Condition of the cells to start from.")],
    target: Annotated[str, typer.Option(help="Condition to predict.")],
    out: Annotated[Path, typer.Option(help="Where to write the predicted cells (.h5ad).")],
    cells_key: Annotated[str | None, typer.Option(help="obs column to select cells by (e.g. cell type).")] = None,
    cells: Annotated[list[str] | None, typer.Option(help="Value(s) of --cells-key to predict; repeatable.")] = None,
    n_samples: Annotated[int, typer.Option(min=0, help="0: posterior mean z; k: k draws of z per cell.")] = 0,
    mode: Annotated[
        Mode, typer.Option(help="counterfactual (keeps each cell's residual) or mean.")
    ] = Mode.counterfactual,
    seed: Annotated[int, typer.Option(help="Seed of the draws when --n-samples > 0.")] = 0,
) -> None:
    """Predict how DATA's --source cells would look under --target with a trained model."""
    with _one_line_errors():
        if (cells_key is None) != (not cells):
            raise CliError("--cells-key and --cells go together")
        model = _load_model(model_dir)
        first = _first_model(model)
        if isinstance(model, TRVAEEnsemble):
            _check_ensemble_options(model, cells_key, n_samples, mode)
        adata = _read_h5ad(data)
        conditions = _obs_values(adata, first.condition_key, data)
        _check_values(conditions, [source], first.condition_key)
        known = [str(c) for c in first.conditions]
        if target not in known:
            raise CliError(f"the model does not know condition {target!r}; it knows {known}")
        selected = conditions == source
        if cells_key is not None:
            groups = _obs_values(adata, cells_key, data)
            _check_values(groups, cells, cells_key)
            selected &= np.isin(groups, cells)
        if not selected.any():
            raise CliError(f"no {source!r} cells among the selected cells of {data}")
        indices = np.flatnonzero(selected)
        if isinstance(model, TRVAEEnsemble):  # one call: the members' spread per gene is over all predicted cells
            prediction = model.predict_perturbation(
                adata, source=source, target=target, indices=indices, cell_type_key=cells_key
            )
        else:
            prediction = _predict_in_chunks(model, adata, indices, source, target, n_samples, mode, seed)
        out.parent.mkdir(parents=True, exist_ok=True)
        prediction.write_h5ad(out)
        typer.echo(f"Predicted {prediction.n_obs} cells ({source} -> {target}); wrote {out}.")


def _check_ensemble_options(ensemble: TRVAEEnsemble, cells_key: str | None, n_samples: int, mode: Mode) -> None:
    """Refuse what an ensemble's prediction does not do."""
    if n_samples != 0 or mode is not Mode.counterfactual:
        raise CliError("an ensemble predicts in counterfactual mode without draws; drop --n-samples and --mode")
    if (ensemble.shift_weight < 1 or ensemble.deviation_weight != 1) and cells_key is None:
        raise CliError(
            f"this ensemble blends its shift with the other cell types' (w = {ensemble.shift_weight:g}, "
            f"lambda = {ensemble.deviation_weight:g}): "
            "give --cells-key (the cell types it was trained with) and --cells"
        )


def _predict_in_chunks(model, adata, indices, source, target, n_samples, mode, seed) -> ad.AnnData:
    """Predict ``indices`` in chunks of :data:`_PREDICTION_CHUNK` cells under a progress bar.

    Draws use seed ``seed + chunk number``, so the same arguments give the same prediction.
    """
    chunks = [indices[i : i + _PREDICTION_CHUNK] for i in range(0, len(indices), _PREDICTION_CHUNK)]
    parts = []
    with Progress(transient=True) as progress:
        task = progress.add_task("Predicting", total=len(indices))
        for number, chunk in enumerate(chunks):
            parts.append(
                model.predict_perturbation(
                    adata, source=source, target=target, indices=chunk, n_samples=n_samples, mode=mode.value,
                    seed=seed + number,
                )
            )  # fmt: skip
            progress.advance(task, len(chunk))
    return parts[0] if len(parts) == 1 else ad.concat(parts, merge="same", uns_merge="first")


# --------------------------------------------------------------------------------------------------------- evaluate
@app.command()
def evaluate(
    prediction: Annotated[
        Path, typer.Argument(metavar="PRED", help="Predicted cells (.h5ad from `scvi-trvae predict`).")
    ],
    data: Annotated[Path, typer.Argument(metavar="DATA", help="Real cells (.h5ad) with the held-out target cells.")],
    condition_key: Annotated[str, typer.Option(help="obs column with each cell's condition.")],
    cells_key: Annotated[str, typer.Option(help="obs column of the held-out group (e.g. cell type).")],
    cells: Annotated[str, typer.Option(help="The held-out value of --cells-key.")],
    control: Annotated[str, typer.Option(help="Condition predicted from.")],
    target: Annotated[str, typer.Option(help="Condition predicted.")],
    out_dir: Annotated[Path, typer.Option(help="Folder for scores.json and the figures.")] = Path("trvae_evaluation"),
    n_degs: Annotated[int, typer.Option(min=2, help="Top DEGs (half up, half down) of the DEG metrics.")] = 100,
    seed: Annotated[int, typer.Option(help="Seed of the E-distance's PCA and subsampling.")] = 0,
) -> None:
    """Score a prediction against the real held-out cells, beside the no-response and mean-shift baselines.

    Prints the metrics table, writes scores.json and the reg-mean, reg-var and top-gene figures to --out-dir.
    """
    with _one_line_errors():
        pred, real = _read_h5ad(prediction), _read_h5ad(data)
        missing = pred.var_names.difference(real.var_names)
        if len(missing):
            raise CliError(f"{len(missing)} predicted genes are not in {data}, e.g. {list(missing[:3])}")
        real = real[:, pred.var_names]
        groups, conditions = _obs_values(real, cells_key, data), _obs_values(real, condition_key, data)
        _check_values(groups, [cells], cells_key)
        _check_values(conditions, [control, target], condition_key)
        keys = {"cell_type_key": cells_key, "condition_key": condition_key, "cell_type": cells}
        split = datasets.holdout_split(real, source=control, target=target, **keys)
        real_target, real_control, training_like = split.real_target, split.control, split.train
        predictions = {
            "trVAE": pred,
            "control + mean shift": baselines.mean_shift(training_like, source=control, target=target, **keys),
            "no response": baselines.no_response(training_like, source=control, target=target, **keys),
        }
        degs = metrics.top_degs(real_target, real_control, n_up=n_degs // 2, n_down=n_degs // 2)
        scores = score_methods(predictions, real_target, real_control, degs=degs, seed=seed)
        typer.echo(f"{cells}: {control} -> {target}, {pred.n_obs} predicted vs {real_target.n_obs} real cells")
        typer.echo(format_table(scores))
        _write_evaluation(out_dir, scores, pred, real_target, real_control, degs, title=f"{cells} {target}")


def _write_evaluation(out_dir, scores, pred, real_target, real_control, degs, title: str) -> None:
    """Write ``scores.json`` and the reg-mean, reg-var and top-gene figures."""
    matplotlib.use("Agg")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "scores.json").write_text(json.dumps(scores, indent=1))
    figures = {"reg_mean.png": pl.reg_mean_plot, "reg_var.png": pl.reg_var_plot}
    for name, plot in figures.items():
        plot(pred, real_target, real_control, degs=degs, show=False, save=out_dir / name, title=f"trVAE: {title}")
    top_genes = list(real_target.var_names[degs[:3]])
    groups = {"control": real_control, "real": real_target, "trVAE": pred}
    pl.gene_distribution_plot(groups, top_genes, show=False, save=out_dir / "top_genes.png")
    written = ", ".join(["scores.json", *figures, "top_genes.png"])
    typer.echo(f"Wrote {written} to {out_dir}.")


# ------------------------------------------------------------------------------------------------------------- demo
@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
)
def demo(ctx: typer.Context) -> None:
    """Hold out one (cell type, condition), train, predict and score it (`scvi-trvae demo --help` for options)."""
    demo_main(list(ctx.args))


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point of ``scvi-trvae``."""
    app(args=None if argv is None else list(argv), prog_name="scvi-trvae")


if __name__ == "__main__":
    main()
