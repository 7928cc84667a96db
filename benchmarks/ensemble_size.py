"""How many members? The recommended pipeline with 1 to 5 members, its blend as chosen (issue 22).

The inner folds that choose the pipeline's blend (``w``, ``lambda``, the kind of reference shift, the spread scaling)
fit one model per fold whatever the number of members, so ``fit_recommended(n_members=K)`` chooses the same blend for
every ``K``: today's default run's (``pipeline_variant.DEFAULT_RUN``, the same code path on the CPU). This trains
5 members (seeds 0-4, as ``fit_recommended`` seeds them) with that blend on each split's training cells and scores the
prediction of the first ``K`` members for ``K`` = 1 to 5: ``K = 3`` is the default pipeline (the JSON records how far
its scores are from the default run's), ``K = 5`` is ``fit_recommended(n_members=5)``. Splits run rarest held-out type
first, each cached in ``--out-dir`` (``members_K/<split>.json``, read by ``matched_folds.report``); ``--report``
prints the win counts against the stronger mean shift of the splits done so far. Kang NK, the tuning split, runs
with ``--tuning`` only, beside the synthetic generator (scored against each cell's own truth too).

    python benchmarks/ensemble_size.py --datasets haber_hpoly kang
    python benchmarks/ensemble_size.py --report
    python benchmarks/ensemble_size.py --tuning kang:NK synthetic:1:0 synthetic:1:1 synthetic:1:2
    python benchmarks/ensemble_size.py --quick --out-dir /tmp/e   # tiny (tested)
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import ensemble_variants  # noqa: E402
from ensemble_variants import DEFAULT_MEMBERS, Variants  # noqa: E402

from scvi_trvae import TRVAEEnsemble  # noqa: E402

OUT_DIR = BENCH / "results" / "ensemble_size"
MEMBERS = (1, 2, 3, 4, 5)


def first_members(ensemble: TRVAEEnsemble, k: int) -> TRVAEEnsemble:
    """The trained ``ensemble`` cut to its first ``k`` members (the same blend and training cells)."""
    part = copy.copy(ensemble)
    part.seeds, part.members = ensemble.seeds[:k], ensemble.members[:k]
    return part


VARIANTS = Variants(
    name="ensemble_size", out_dir=OUT_DIR, field="members", names=tuple(str(k) for k in MEMBERS),
    default=str(DEFAULT_MEMBERS), n_members=max(MEMBERS),
    predictors=lambda ensemble: {str(k): first_members(ensemble, k) for k in MEMBERS},
    folder=lambda k: f"members_{k}", label=lambda k: f"{k} member{'s' if int(k) > 1 else ''}", value=int,
)  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    ensemble_variants.main(VARIANTS, __doc__, argv)


if __name__ == "__main__":
    main()
