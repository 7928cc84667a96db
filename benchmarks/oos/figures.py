"""Reg-mean, reg-var and gene-distribution figures of a figure split, from the cached seed-0 predictions."""

from __future__ import annotations

import logging

import numpy as np

from .cache import prediction_path, slug
from .expression import dense
from .running import RunConfig
from .splits import Split

logger = logging.getLogger("out_of_sample")

#: The method the figures are about: they are drawn only when its seed-0 predictions are cached.
FIGURE_METHOD = "trVAE"


def make_figures(config: RunConfig, split: Split) -> None:
    """Reg-mean, reg-var and gene-distribution plots of the cached seed-0 predictions of a figure split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from scvi_trvae import pl

    predictions = {}
    for name in config.methods:
        path = prediction_path(config.cache_dir, split, name)
        if path.exists():
            pred = np.load(path)
            if pred.shape == (split.control.n_obs, split.control.n_vars):
                predictions[name] = pred
    if FIGURE_METHOD not in predictions:
        # a cache rebuilt from the results file, or a run of other methods only: redrawing would
        # replace the committed figures with plots that lack trVAE
        logger.info(
            "figures of %s %s not drawn: no cached %s predictions", split.dataset, split.cell_type, FIGURE_METHOD
        )
        return
    config.figure_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{split.dataset}_{slug(split.cell_type)}_{slug(split.target)}"
    real_target, control = dense(split.real_target.X), dense(split.control.X)
    names = np.asarray(split.control.var_names, dtype=str)
    n_cols = min(len(predictions), 4)
    n_rows = int(np.ceil(len(predictions) / n_cols))
    for what, plot in (("reg_mean", pl.reg_mean_plot), ("reg_var", pl.reg_var_plot)):
        fig, axes = plt.subplots(
            n_rows, n_cols, figsize=(4.2 * n_cols, 4.2 * n_rows), squeeze=False, layout="constrained"
        )
        for ax, (name, pred) in zip(axes.ravel(), predictions.items(), strict=False):
            plot(
                pred,
                real_target,
                control,
                degs=split.degs,
                gene_names=names,
                title=name,
                ax=ax,
                show=False,
                top_labels=5,
            )
        for ax in axes.ravel()[len(predictions) :]:
            ax.set_axis_off()
        fig.suptitle(f"{split.dataset}: {split.cell_type} {split.target} (held out), {len(names)} genes")
        fig.savefig(config.figure_dir / f"{stem}_{what}.png", dpi=110)
        plt.close(fig)
    genes = [g for g in split.spec.figure[2] if g in set(names)] if split.spec.figure else []
    genes = (genes or [names[split.degs[0]], names[split.degs[1]]])[:3]
    groups = {"control": control, "real": real_target, **predictions}
    fig, axes = plt.subplots(
        len(genes), 1, figsize=(max(6.0, 0.8 * len(groups)), 3.0 * len(genes)), layout="constrained"
    )
    pl.gene_distribution_plot(groups, genes, gene_names=names, ax=list(np.ravel(axes)), show=False)
    fig.suptitle(f"{split.dataset}: {split.cell_type} {split.target} (held out)")
    fig.savefig(config.figure_dir / f"{stem}_genes.png", dpi=110)
    plt.close(fig)
    logger.info("wrote figures %s_*.png to %s", stem, config.figure_dir)
