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
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from anndata import AnnData

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import synthetic_state  # noqa: E402
from blend_ceiling import TUNING_SPLIT  # noqa: E402
from blend_ceiling import score as split_score  # noqa: E402
from blend_grid import case_data, case_file  # noqa: E402
from blend_grid import score as case_score  # noqa: E402
from ensemble_size import DEFAULT_MEMBERS, QUICK_BLEND, train_members  # noqa: E402
from matched_folds import case_name, quick_split, rarest_first, report  # noqa: E402
from oos.splits import split_parser  # noqa: E402
from pipeline_variant import DEFAULT_RUN  # noqa: E402

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


def scores_by_prediction(ensemble: TRVAEEnsemble, control, source: str, target: str, scorer) -> dict[str, dict]:
    """``scorer`` of the ensemble's prediction (``average``) and of its mixture."""
    predictors = {"average": ensemble, "mixture": mixed(ensemble)}
    return {
        name: scorer(as_dense(predictor.predict_perturbation(control, source=source, target=target).X))
        for name, predictor in predictors.items()
    }


def run_split(split, quick: bool) -> dict[str, Any]:
    """Train the members on one benchmark split with the default run's blend; the scores of both predictions."""
    default = None if quick else json.loads((DEFAULT_RUN / case_name(split)).read_text())
    chosen = QUICK_BLEND if default is None else default["chosen"]
    ensemble = train_members(split.train, split.task_keys, chosen, split.setup_kwargs, quick, DEFAULT_MEMBERS)
    by_prediction = scores_by_prediction(
        ensemble, split.control, split.source, split.target, lambda x: split_score(x.astype(np.float64), split)
    )  # fmt: skip
    result = {"dataset": split.dataset, "cell_type": split.cell_type, "target": split.target,
              "n_control": int(split.control.n_obs), "chosen": chosen}  # fmt: skip
    if default is not None:
        result["default_run_difference"] = {
            metric: by_prediction["average"][metric] - value for metric, value in default["scores"].items()
        }
    return {**result, "scores_by_prediction": by_prediction}


def write_split(result: dict[str, Any], out_dir: Path, name: str) -> None:
    """One file per prediction (``average/name``, ``mixture/name``, in ``matched_folds.report``'s format)."""
    row = {key: value for key, value in result.items() if key != "scores_by_prediction"}
    for prediction, scores in result["scores_by_prediction"].items():
        folder = out_dir / prediction
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(json.dumps({**row, "prediction": prediction, "scores": scores}, indent=1) + "\n")


def split_report(out_dir: Path) -> str:
    """For each prediction: its wins against the stronger mean shift beside the default run's."""
    parts = [
        f"### {prediction}\n\n" + report(out_dir / prediction, label=prediction, default_dir=DEFAULT_RUN)
        for prediction in PREDICTIONS
        if (out_dir / prediction).exists()
    ]
    return "\n\n".join(parts) if parts else "no splits done"


def run_tuning_case(case: str, data_dir: Path, quick: bool) -> dict[str, Any]:
    """A tuning case (``kang:NK``, ``synthetic:S:SEED``) with the default run's blend of that case."""
    data = case_data(case, quick, data_dir)
    chosen = QUICK_BLEND if quick else json.loads((DEFAULT_RUN / "tuning" / case_file(case)).read_text())["chosen"]
    keys = synthetic_state.KEYS
    ensemble = train_members(data.train, keys, chosen, quick=quick, n_members=DEFAULT_MEMBERS)
    scores = scores_by_prediction(ensemble, data.control, keys["source"], keys["target"], lambda x: case_score(x, data))
    return {"case": case, "chosen": chosen, "scores_by_prediction": scores}


def tuning_report(out_dir: Path) -> str:
    rows = [
        {"case": case["case"], "prediction": prediction, **scores}
        for path in sorted(out_dir.glob("case_*.json"))
        for case in [json.loads(path.read_text())]
        for prediction, scores in case["scores_by_prediction"].items()
    ]  # fmt: skip
    return pd.DataFrame(rows).round(3).to_markdown(index=False) if rows else "no cases done"


def main(argv: list[str] | None = None) -> None:
    parser = split_parser(__doc__, OUT_DIR)
    parser.add_argument("--tuning", nargs="+", metavar="CASE", help="run tuning cases (synthetic:S:SEED, kang:NK)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.tuning:
        folder = args.out_dir / "tuning"
        folder.mkdir(parents=True, exist_ok=True)
        for case in [] if args.report else args.tuning:
            path = folder / case_file(case)
            if not path.exists() or args.quick:
                path.write_text(json.dumps(run_tuning_case(case, args.data_dir, args.quick), indent=1) + "\n")
        text = tuning_report(folder)
        (folder / "member_mixture_tuning.md").write_text(text + "\n")
        print(text)
        return
    args.out_dir.mkdir(parents=True, exist_ok=True)
    cases = [] if args.report else [quick_split()] if args.quick else rarest_first(args.datasets, args.data_dir)
    for split in cases:
        name = case_name(split)
        done = (args.out_dir / PREDICTIONS[-1] / name).exists()
        if (split.dataset, split.cell_type) == TUNING_SPLIT or (done and not args.quick):
            continue
        result = run_split(split, args.quick)
        write_split(result, args.out_dir, name)
        print(f"{split.dataset} {split.cell_type} {split.target}: {result['scores_by_prediction']}", flush=True)
    text = split_report(args.out_dir) if not args.quick else json.dumps(result["scores_by_prediction"])
    (args.out_dir / "member_mixture.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
