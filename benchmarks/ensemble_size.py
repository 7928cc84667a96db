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
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import synthetic_state  # noqa: E402
from blend_ceiling import TUNING_SPLIT  # noqa: E402
from blend_ceiling import score as split_score  # noqa: E402
from blend_grid import case_data, case_file  # noqa: E402
from blend_grid import score as case_score  # noqa: E402
from matched_folds import case_name, quick_split, rarest_first, report  # noqa: E402
from oos.splits import split_parser  # noqa: E402
from pipeline_variant import DEFAULT_RUN  # noqa: E402

from scvi_trvae import TRVAEEnsemble, model_selection  # noqa: E402
from scvi_trvae.utils import as_dense  # noqa: E402

OUT_DIR = BENCH / "results" / "ensemble_size"
MEMBERS = (1, 2, 3, 4, 5)
#: The default pipeline's number of members (``fit_recommended``).
DEFAULT_MEMBERS = 3
#: The blend of ``--quick`` (no default run to read it from).
QUICK_BLEND = {"shift_weight": 0.5, "deviation_weight": 1.0, "reference_shift": "similarity", "spread_scaling": True,
               "config": {}}  # fmt: skip


def first_members(ensemble: TRVAEEnsemble, k: int) -> TRVAEEnsemble:
    """The trained ``ensemble`` cut to its first ``k`` members (the same blend and training cells)."""
    part = copy.copy(ensemble)
    part.seeds, part.members = ensemble.seeds[:k], ensemble.members[:k]
    return part


def train_members(
    train, keys: dict[str, str], chosen: dict[str, Any], setup_kwargs=None, quick: bool = False,
    n_members: int = max(MEMBERS),
) -> TRVAEEnsemble:  # fmt: skip
    """:func:`model_selection.train_ensemble` of ``n_members`` members with the blend ``chosen``, as
    ``fit_recommended`` trains its members (seeds from 0, the CPU)."""
    config = dict(chosen["config"])
    if quick:
        config["training_steps"] = model_selection.training_steps(train.n_obs, 2)
    return model_selection.train_ensemble(
        train, condition_key=keys["condition_key"], config=config, seeds=range(n_members),
        shift_weight=chosen["shift_weight"], deviation_weight=chosen["deviation_weight"],
        reference_shift=chosen["reference_shift"], spread_scaling=chosen["spread_scaling"],
        labels_key=keys["cell_type_key"], setup_kwargs=setup_kwargs, accelerator="cpu",
    )  # fmt: skip


def scores_by_members(ensemble: TRVAEEnsemble, control, source: str, target: str, scorer) -> dict[str, dict]:
    """``scorer`` of the prediction of the first ``K`` members, for each ``K`` of :data:`MEMBERS`."""
    return {
        str(k): scorer(
            as_dense(first_members(ensemble, k).predict_perturbation(control, source=source, target=target).X)
        )
        for k in MEMBERS
    }


def run_split(split, quick: bool) -> dict[str, Any]:
    """Train the members on one benchmark split with the default run's blend; the scores for each ``K``."""
    default = None if quick else json.loads((DEFAULT_RUN / case_name(split)).read_text())
    chosen = QUICK_BLEND if default is None else default["chosen"]
    ensemble = train_members(split.train, split.task_keys, chosen, split.setup_kwargs, quick)
    by_k = scores_by_members(
        ensemble, split.control, split.source, split.target, lambda x: split_score(x.astype(np.float64), split)
    )  # fmt: skip
    result = {"dataset": split.dataset, "cell_type": split.cell_type, "target": split.target,
              "n_control": int(split.control.n_obs), "chosen": chosen, "scores_by_members": by_k}  # fmt: skip
    if default is not None:
        result["default_run_difference"] = {
            metric: by_k[str(DEFAULT_MEMBERS)][metric] - value for metric, value in default["scores"].items()
        }
    return result


def write_split(result: dict[str, Any], out_dir: Path, name: str) -> None:
    """One file per ``K`` (``members_K/name``, in ``matched_folds.report``'s format)."""
    for k, scores in result["scores_by_members"].items():
        folder = out_dir / f"members_{k}"
        folder.mkdir(parents=True, exist_ok=True)
        row = {key: result[key] for key in ("dataset", "cell_type", "target", "n_control", "chosen")}
        extra = (
            {"default_run_difference": result["default_run_difference"]} if "default_run_difference" in result else {}
        )
        (folder / name).write_text(json.dumps({**row, "members": int(k), "scores": scores, **extra}, indent=1) + "\n")


def split_report(out_dir: Path) -> str:
    """For each ``K``: its wins against the stronger mean shift beside the default run's (``matched_folds.report``)."""
    parts = []
    for k in MEMBERS:
        folder = out_dir / f"members_{k}"
        if folder.exists():
            label = f"{k} member{'s' if k > 1 else ''}"
            parts.append(f"### {label}\n\n" + report(folder, label=label, default_dir=DEFAULT_RUN))
    return "\n\n".join(parts) if parts else "no splits done"


def run_tuning_case(case: str, data_dir: Path, quick: bool) -> dict[str, Any]:
    """A tuning case (``kang:NK``, ``synthetic:S:SEED``) with the default run's blend of that case."""
    data = case_data(case, quick, data_dir)
    chosen = QUICK_BLEND if quick else json.loads((DEFAULT_RUN / "tuning" / case_file(case)).read_text())["chosen"]
    keys = synthetic_state.KEYS
    ensemble = train_members(data.train, keys, chosen, quick=quick)
    by_k = scores_by_members(ensemble, data.control, keys["source"], keys["target"], lambda x: case_score(x, data))
    return {"case": case, "chosen": chosen, "scores_by_members": by_k}


def tuning_report(out_dir: Path) -> str:
    rows = [
        {"case": case["case"], "members": int(k), **scores}
        for path in sorted(out_dir.glob("case_*.json"))
        for case in [json.loads(path.read_text())]
        for k, scores in case["scores_by_members"].items()
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
        (folder / "ensemble_size_tuning.md").write_text(text + "\n")
        print(text)
        return
    args.out_dir.mkdir(parents=True, exist_ok=True)
    cases = [] if args.report else [quick_split()] if args.quick else rarest_first(args.datasets, args.data_dir)
    for split in cases:
        name = case_name(split)
        done = (args.out_dir / f"members_{max(MEMBERS)}" / name).exists()
        if (split.dataset, split.cell_type) == TUNING_SPLIT or (done and not args.quick):
            continue
        result = run_split(split, args.quick)
        write_split(result, args.out_dir, name)
        print(f"{split.dataset} {split.cell_type} {split.target}: {result['scores_by_members']}", flush=True)
    text = split_report(args.out_dir) if not args.quick else json.dumps(result["scores_by_members"])
    (args.out_dir / "ensemble_size.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
