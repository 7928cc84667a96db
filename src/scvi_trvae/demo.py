r"""Demo: hold out one (cell type, condition) pair, train trVAE without it, predict it and score it.

The demo runs the recommended pipeline (``docs/ensembles.md``): a 3-seed :class:`~scvi_trvae.TRVAEEnsemble`
whose shift is blended with the pooled shift of the other cell types, the weight ``w`` chosen by inner
leave-one-cell-type-out on the training cells only (:func:`scvi_trvae.model_selection.fit_self_tuned`).
It prints that pipeline's scores beside one seed alone, the plain ensemble and the baselines, then says in
words which method won on which metric.

Run ``python -m scvi_trvae.demo`` or ``scvi-trvae demo`` (the package's synthetic data set, with cell-type-
and state-dependent responses) or point it at an ``.h5ad``::

    scvi-trvae demo --data kang.h5ad --condition-key condition --cell-type-key cell_type \
        --source control --target stimulated --cell-type NK

:func:`run` is both the Python entry point and the one definition of the options of ``scvi-trvae demo``
and ``scvi-trvae-demo``. Heavy libraries (torch, scvi-tools) are imported when it runs, not at import.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from docrep import DocstringProcessor

if TYPE_CHECKING:
    import anndata as ad

#: ``state_dependence`` of the demo's synthetic data: responses partly shared, partly cell-type specific and
#: scaled by each cell's state, as IFN-beta responses are (``datasets.synthetic_perturbation``).
DEMO_STATE_DEPENDENCE = 1.0

#: The baseline the verdicts compare against: the other cell types' mean response added to the control cells.
MEAN_SHIFT = "control + mean shift"

#: The scores the verdicts speak of: their names in words, whether a higher score is better, and what they measure.
VERDICT_METRICS: dict[str, tuple[str, bool, str]] = {
    "r2_mean_deg": ("r² mean (DEG)", True, "the mean expression of the top DEGs"),
    "pearson_delta_deg": ("Δ-Pearson (DEG)", True, "the direction of the DEGs' response"),
    "edist_scaled": ("E-distance", False, "the spread of the cells as a whole"),
}


_verdict_dsp = DocstringProcessor(
    param_comparison="""\
method
    The method under test (a model's prediction).
baseline
    The method it is compared with.
name
    How the sentences call ``method`` (default: ``method`` itself).""",
)


def score_methods(
    predictions: dict[str, ad.AnnData], real_target: ad.AnnData, real_control: ad.AnnData, *, degs, seed: int
) -> dict[str, dict[str, float]]:
    """Score each method's prediction with :func:`~scvi_trvae.metrics.evaluate_prediction` on the same DEGs."""
    from scipy.stats import ConstantInputWarning

    from . import metrics

    with warnings.catch_warnings():  # "no response" has no Δ-Pearson: NaN, shown as n/a, not a warning
        warnings.simplefilter("ignore", ConstantInputWarning)
        return {
            name: metrics.evaluate_prediction(pred, real_target, real_control, degs=degs, seed=seed)
            for name, pred in predictions.items()
        }


def format_table(rows: dict[str, dict[str, float]]) -> str:
    """Format metrics as a markdown table, one row per method."""
    from . import metrics

    # Δ-Pearson of "no response" is undefined (a zero response): shown as n/a
    cells = [[name, *(_number(scores[k]) for k in metrics.METRIC_KEYS)] for name, scores in rows.items()]
    return metrics.markdown_table(["method", *metrics.METRIC_KEYS], cells)


@_verdict_dsp.dedent
def verdict(
    scores: dict[str, dict[str, float]], method: str, baseline: str = MEAN_SHIFT, *, name: str | None = None
) -> str:
    """Say in words whether ``method`` or ``baseline`` won on each of :data:`VERDICT_METRICS`, and what it means.

    Parameters
    ----------
    scores
        Scores of each method, as :func:`score_methods` returns them.
    %(param_comparison)s

    Returns
    -------
    Two sentences: the metrics each method won with both scores, then what that says about this data. An
    undefined score (NaN) loses to a defined one; a tie goes to ``baseline``.
    """
    name = method if name is None else name
    wins: dict[str, list[str]] = {method: [], baseline: []}
    measured: dict[str, list[str]] = {method: [], baseline: []}
    for key, (label, higher_is_better, what) in VERDICT_METRICS.items():
        ours, theirs = scores[method][key], scores[baseline][key]
        if math.isnan(ours) and math.isnan(theirs):
            continue
        if math.isnan(ours) or math.isnan(theirs):  # an undefined score (no response has no Δ-Pearson) loses
            method_wins = math.isnan(theirs)
        else:
            method_wins = ours > theirs if higher_is_better else ours < theirs
        winner, loser = (method, baseline) if method_wins else (baseline, method)
        wins[winner].append(f"{label} {_number(scores[winner][key])} vs {_number(scores[loser][key])}")
        measured[winner].append(what)
    called = {method: name, baseline: baseline}
    said = [
        f"{called[winner]} beats {called[loser]} on {' and on '.join(wins[winner])}"
        for winner, loser in ((method, baseline), (baseline, method))
        if wins[winner]
    ]
    lower = [label for label, higher, _ in VERDICT_METRICS.values() if not higher]
    if not wins[method]:
        meaning = (
            f"on this data a constant shift (the other cell types' mean response) predicts the held-out population "
            f"at least as well as {name}: these metrics see nothing it adds beyond the average response."
        )
    elif not wins[baseline]:
        meaning = (
            f"on this data {name} captures a response of the held-out cells that the other cell types' "
            "average shift misses."
        )
    else:
        meaning = (
            f"neither is better on every metric: {name} gets {' and '.join(measured[method])} closer, "
            f"{baseline} {' and '.join(measured[baseline])}."
        )
    return f"{'; '.join(said)} (lower is better for {', '.join(lower)}). In plain words: {meaning}"


def ground_truth(
    predictions: dict[str, ad.AnnData], control: ad.AnnData, source: str, target: str, cell_type: str
) -> dict[str, dict[str, float]]:
    """Score each prediction of synthetic data against each control cell's own true response.

    :func:`~scvi_trvae.datasets.ground_truth_scores` on the response genes of ``cell_type``, for each method.
    """
    from .datasets import ground_truth_scores, synthetic_true_response

    response, genes = synthetic_true_response(control, source, target, cell_type)
    return {name: ground_truth_scores(pred, control, response, genes) for name, pred in predictions.items()}


def format_ground_truth(truth: dict[str, dict[str, float]]) -> str:
    """Format :func:`ground_truth`'s scores as a title and a markdown table, one row per method."""
    from . import metrics
    from ._ground_truth import GROUND_TRUTH_KEYS as keys

    rows = [[name, *(_number(scores[key]) for key in keys)] for name, scores in truth.items()]
    title = (
        "Against each cell's own true response (known for synthetic data only): paired error and mean-response "
        "error (lower is better), how the predicted per-cell shifts follow the true ones (r), and their spread "
        "relative to the true spread (1 is right)"
    )
    return title + "\n" + metrics.markdown_table(["method", *keys.values()], rows)


@_verdict_dsp.dedent
def ground_truth_verdict(
    truth: dict[str, dict[str, float]], method: str, baseline: str = MEAN_SHIFT, *, name: str | None = None
) -> str:
    """Say who is closer to each cell's own truth and whether the mean response explains the population metrics.

    Parameters
    ----------
    truth
        Scores of :func:`ground_truth`.
    %(param_comparison)s

    Returns
    -------
    One sentence on the paired error (with ``method``'s per-cell shift r when it wins), one on the error of the
    mean response, which the population metrics (E-distance, Δ-Pearson) weigh most.
    """
    name = method if name is None else name
    ours, theirs = truth[method], truth[baseline]
    paired = f"paired error {_number(ours['paired_rmse'])} vs {_number(theirs['paired_rmse'])}"
    if ours["paired_rmse"] < theirs["paired_rmse"]:
        first = (
            f"Cell by cell, {name} is closer than {baseline} to each cell's own true response ({paired}): its "
            f"per-cell shifts follow the cells' states (r = {_number(ours['cell_shift_r'])}), which a constant "
            "shift cannot."
        )
    else:
        first = f"Cell by cell, {baseline} is at least as close to each cell's own true response ({paired})."
    mean = f"{_number(ours['shift_error'])} vs {_number(theirs['shift_error'])}"
    subject = f"{name[:1].upper()}{name[1:]}'s mean response"
    if ours["shift_error"] > theirs["shift_error"]:
        second = (
            f"{subject} is further from the true mean response than that of {baseline} ({mean}): the population "
            "metrics above weigh the mean most, which is where it loses them."
        )
    else:
        second = f"{subject} is at least as close to the true mean response as that of {baseline} ({mean})."
    return f"{first} {second}"


def _number(score: float) -> str:
    return "n/a" if math.isnan(score) else f"{score:.3f}"


def run(
    data: Annotated[Path | None, typer.Option(help="log-normalised .h5ad (default: the synthetic data set).")] = None,
    condition_key: Annotated[str, typer.Option(help="obs column with each cell's condition.")] = "condition",
    cell_type_key: Annotated[str, typer.Option(help="obs column with each cell's type.")] = "cell_type",
    source: Annotated[str, typer.Option(help="Condition to predict from.")] = "control",
    target: Annotated[str, typer.Option(help="Condition to predict.")] = "stimulated",
    cell_type: Annotated[str, typer.Option(help="Cell type whose --target cells are held out.")] = "type_A",
    members: Annotated[int, typer.Option(min=1, help="Seeds in the ensemble (1: a single model).")] = 3,
    inner_folds: Annotated[
        int | None, typer.Option(min=1, help="Inner held-out cell types that choose w (default: the pipeline's 4).")
    ] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="Default: the pipeline's own training length.")] = None,
    state_dependence: Annotated[
        float,
        typer.Option(help="Synthetic data only: how much responses depend on cell type and state (0: shared)."),
    ] = DEMO_STATE_DEPENDENCE,
    seed: Annotated[int, typer.Option(help="Seed of the data, the training and the scores.")] = 0,
    output_dir: Annotated[Path, typer.Option(help="Folder for reg_mean_plot.png and scores.json.")] = Path(
        "demo_output"
    ),
) -> dict[str, dict[str, float]]:
    """Hold out one (cell type, condition), train the recommended pipeline without it, predict it and score it."""
    with _libraries_quiet():
        adata, split = _load(data, condition_key, cell_type_key, source, target, cell_type, state_dependence, seed)
        from .model_selection import RECOMMENDED_INNER_FOLDS, inner_cell_types

        available = len(inner_cell_types(split.train, cell_type_key, condition_key, source, target))
        inner_folds = min(available, inner_folds or RECOMMENDED_INNER_FOLDS)
        n_fits = inner_folds + members  # the recommended pipeline: one configuration per inner fold, then members
        print(
            f"Data: {'synthetic' if data is None else data}, {adata.n_obs} cells x {adata.n_vars} genes. "
            f"Holding out the {split.real_target.n_obs} {cell_type} {target} cells, then training the recommended "
            f"pipeline on the other {split.train.n_obs} cells ({n_fits} model fits: {inner_folds} inner fold(s) that "
            f"choose the blend, then {members} member(s)), predicting the held-out cells from their "
            f"{split.control.n_obs} {source} cells and scoring them beside two baselines.",
            flush=True,
        )
        predictions, recommended = _fit_and_predict(split, cell_type_key, condition_key, source, target, cell_type,
                                                     members, inner_folds, epochs, seed)  # fmt: skip
        return _report(predictions, recommended, split, cell_type, source, target, seed, output_dir)


def _load(data, condition_key, cell_type_key, source, target, cell_type, state_dependence, seed):
    """Read or generate the data and split off the held-out cells (a one-line exit naming a bad hold-out)."""
    import anndata as ad
    import scvi

    from .datasets import holdout_split, synthetic_perturbation

    scvi.settings.seed = seed
    adata = synthetic_perturbation(seed=seed, state_dependence=state_dependence) if data is None else ad.read_h5ad(data)
    keys = {"cell_type_key": cell_type_key, "condition_key": condition_key, "source": source, "target": target}
    try:
        return adata, holdout_split(adata, cell_type=cell_type, **keys)
    except (KeyError, ValueError) as error:
        raise SystemExit(f"Cannot hold out {cell_type!r} in {target!r}: {error}") from error


def _fit_and_predict(split, cell_type_key, condition_key, source, target, cell_type, members, inner_folds, epochs,
                     seed) -> tuple[dict[str, ad.AnnData], str]:  # fmt: skip
    """Fit the recommended pipeline on ``split.train``; predict the held-out cells with it and the baselines."""
    from . import baselines, model_selection

    keys = {"cell_type_key": cell_type_key, "condition_key": condition_key}
    task = {"source": source, "target": target}
    start = time.perf_counter()
    ensemble, selection = model_selection.fit_recommended(
        split.train, n_members=members, inner_folds=inner_folds, max_epochs=epochs, seed=seed, **keys, **task
    )
    weight, deviation = selection.best_shift_weight, selection.best_deviation_weight
    scaled = selection.best_spread_scaling
    reference = f", the {selection.best_reference_shift} reference shift" if weight < 1 or scaled else ""
    spread = ", the observed spread scaled" if scaled else ""
    print(
        f"Chose w = {weight:g}, lambda = {deviation:g}{reference}{spread} by inner leave-one-cell-type-out on the "
        f"training cells ({', '.join(selection.inner_cell_types)}); trained {ensemble.n_members} member(s) "
        f"in {time.perf_counter() - start:.0f} s in all."
    )
    recommended = f"trVAE ensemble + shrink (w={weight:g}, lambda={deviation:g}{', spread scaled' if scaled else ''})"
    predict = task  # the ensemble knows its cell types (labels_key, set by fit_recommended)
    control = split.control
    predictions = {
        f"trVAE (seed {seed})": ensemble.members[0].predict_perturbation(control, **task),
        f"trVAE ensemble ({ensemble.n_members} seeds)": ensemble.predict_perturbation(control, blend=False, **predict),
        recommended: ensemble.predict_perturbation(control, **predict),
        MEAN_SHIFT: baselines.mean_shift(split.train, cell_type=cell_type, **keys, **task),
        "no response": baselines.no_response(split.train, cell_type=cell_type, **keys, **task),
    }
    return predictions, recommended


def _report(predictions, recommended, split, cell_type, source, target, seed, output_dir) -> dict[str, dict]:
    """Score, print the table and the verdict, write the reg-mean plot and the scores to ``output_dir``."""
    from . import metrics, pl

    real_target, real_control = split.real_target, split.control
    degs = metrics.top_degs(real_target, real_control)
    scores = score_methods(predictions, real_target, real_control, degs=degs, seed=seed)
    print()
    print(f"{cell_type}: {source} -> {target}, predicted vs {real_target.n_obs} real held-out cells")
    print(format_table(scores))
    print()
    print(verdict(scores, recommended, name="the recommended pipeline"))
    if "synthetic_perturbation" in real_control.uns:  # synthetic data know each cell's true response
        truth = ground_truth(predictions, real_control, source, target, cell_type)
        print()
        print(format_ground_truth(truth))
        print()
        print(ground_truth_verdict(truth, recommended, name="the recommended pipeline"))
        scores = {name: {**scores[name], **truth[name]} for name in scores}
    output_dir.mkdir(parents=True, exist_ok=True)
    plot_path = output_dir / "reg_mean_plot.png"
    pl.reg_mean_plot(
        predictions[recommended], real_target, real_control, degs=degs, show=False, save=plot_path,
        title=f"{recommended}: {cell_type} {target} (held out)",
    )  # fmt: skip
    (output_dir / "scores.json").write_text(json.dumps(scores, indent=1))
    print(f"\nWrote {plot_path} and {output_dir / 'scores.json'}.")
    return scores


#: Loggers whose INFO lines (seeds set, devices found, AnnData setup transferred) would bury the demo's table.
_CHATTY_LOGGERS = ("scvi", "lightning.pytorch", "lightning.fabric")


@contextlib.contextmanager
def _libraries_quiet() -> Iterator[None]:
    """Keep scvi-tools' and Lightning's INFO lines and Lightning's warnings out of the demo's output, then restore.

    Only these libraries' log levels and warnings: stderr stays open, so the pipeline's progress bar shows.
    """
    import scvi

    loggers = [logging.getLogger(name) for name in _CHATTY_LOGGERS]
    levels = [logger.level for logger in loggers]
    verbosity = scvi.settings.verbosity
    scvi.settings.verbosity = logging.WARNING
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"lightning\.")
            yield
    finally:
        scvi.settings.verbosity = verbosity
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``scvi-trvae-demo`` and ``python -m scvi_trvae.demo``: the ``scvi-trvae demo`` command itself.

    Parameters
    ----------
    argv
        The command-line arguments (default: ``sys.argv[1:]``), the options of :func:`run`.
    """
    from typer.main import get_command

    from scvi_trvae.cli import app

    demo_command = get_command(app).commands["demo"]  # the command the typer app registers from run
    demo_command.main(args=None if argv is None else list(argv), prog_name="scvi-trvae-demo")


if __name__ == "__main__":
    main()
