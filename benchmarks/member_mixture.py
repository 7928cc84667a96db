"""Each cell's deviation from one member instead of the members' mean deviation (issue 22).

The inner folds that choose the pipeline's ``lambda`` (the weight of each cell's deviation ``d_i`` from the mean
response) fit *one* model per fold, so ``lambda`` is chosen for one model's deviations; the ensemble applies it to the
mean of its members' deviations, whose spread shrinks as members disagree (``docs/accuracy.md``, *How many members?*).
The *mixture* keeps the members' mean response but gives cell ``k`` of each predicted type the deviation of member
``k mod K`` from that member's own mean response: its cells spread as one model's do, around the ensemble's mean.

This trains the default pipeline's 3 members (seeds 0-2) with the blend today's default chose on each split
(``pipeline_variant.DEFAULT_RUN``) and scores both predictions: ``average`` (today's default; the JSON records how far
its scores are from the default run's) and ``mixture``. Splits run rarest held-out type first, each cached in
``--out-dir`` (``average/<split>.json`` and ``mixture/<split>.json``, read by ``matched_folds.report``); ``--report``
prints the win counts against the stronger mean shift. Kang NK, the tuning split, runs with ``--tuning`` only, beside
the synthetic generator (scored against each cell's own truth too).

    python benchmarks/member_mixture.py --datasets haber_hpoly kang
    python benchmarks/member_mixture.py --report
    python benchmarks/member_mixture.py --tuning kang:NK synthetic:1:0 synthetic:1:1 synthetic:1:2
    python benchmarks/member_mixture.py --quick --out-dir /tmp/m   # tiny (tested)
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
from anndata import AnnData

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import ensemble_variants  # noqa: E402
from ensemble_variants import DEFAULT_MEMBERS, Variants  # noqa: E402

from scvi_trvae import TRVAEEnsemble  # noqa: E402
from scvi_trvae.utils import as_dense  # noqa: E402

OUT_DIR = BENCH / "results" / "member_mixture"
PREDICTIONS = ("average", "mixture")


def mix_members(stacked: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    """Each cell's prediction from one member, around the members' mean prediction (members x cells x genes in).

    Within each group, cell ``k`` takes member ``k mod K``'s deviation from that member's mean over the group; the
    deviations are centred over the group and added to the members' mean over the group (so the group's mean is the
    members' mean), clipped at zero.
    """
    n_members, n_cells, _ = stacked.shape
    labels = np.zeros(n_cells, dtype=int) if groups is None else np.asarray(groups)
    mixed = np.empty(stacked.shape[1:], dtype=np.float64)
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        member = np.arange(len(rows)) % n_members
        deviation = stacked[member, rows] - stacked[:, rows].mean(1)[member]
        mixed[rows] = stacked[:, rows].mean((0, 1)) + deviation - deviation.mean(0)
    return np.clip(mixed, 0.0, None)


class MixedMembers(TRVAEEnsemble):
    """A trained ensemble whose members' prediction is :func:`mix_members` of them (per ``labels_key`` type)."""

    def _members_prediction(self, adata, source, target, indices, batch_size) -> AnnData:
        out = super()._members_prediction(adata, source, target, indices, batch_size)
        # the base class keeps no member's own prediction: each member predicts again (a fraction of its training)
        stacked = np.stack([
            as_dense(member.predict_perturbation(
                adata, source=source, target=target, indices=indices, batch_size=batch_size, mode="counterfactual"
            ).X) for member in self.members
        ])  # fmt: skip
        groups = out.obs[self.labels_key].astype(str).to_numpy() if self.labels_key in out.obs else None
        out.X = mix_members(stacked.astype(np.float64), groups).astype(np.float32)
        return out


def mixed(ensemble: TRVAEEnsemble) -> MixedMembers:
    """The trained ``ensemble`` (the same members and blend) predicting with :func:`mix_members`."""
    part = copy.copy(ensemble)
    part.__class__ = MixedMembers
    return part


VARIANTS = Variants(
    name="member_mixture", out_dir=OUT_DIR, field="prediction", names=PREDICTIONS, default="average",
    n_members=DEFAULT_MEMBERS, predictors=lambda ensemble: {"average": ensemble, "mixture": mixed(ensemble)},
)  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    ensemble_variants.main(VARIANTS, __doc__, argv)


if __name__ == "__main__":
    main()
