"""Several predictions of one trained pipeline ensemble, scored on the benchmark splits and the tuning cases.

``ensemble_size.py`` (the first ``K`` of five members) and ``member_mixture.py`` (the members' mean deviation or one
member's per cell) each describe their predictions as :class:`Variants`; this module trains the ensemble with the blend
today's default chose (``pipeline_variant.DEFAULT_RUN``, the same code path on the CPU), scores every prediction, and
caches, reports and runs them the same way: splits rarest held-out type first, one file per split and prediction in
``matched_folds.report``'s format, Kang NK (the tuning split) only with ``--tuning``, beside the synthetic generator.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
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

#: The blend of ``--quick`` (no default run to read it from).
QUICK_BLEND = {"shift_weight": 0.5, "deviation_weight": 1.0, "reference_shift": "similarity", "spread_scaling": True,
               "config": {}}  # fmt: skip
#: The default pipeline's number of members (``fit_recommended``).
DEFAULT_MEMBERS = 3
#: What a split's result file holds besides the prediction's name and scores.
ROW_KEYS = ("dataset", "cell_type", "target", "n_control", "chosen")


@dataclass(frozen=True)
class Variants:
    """The predictions a benchmark scores, each made by an ensemble cut from or built on the trained one.

    ``field`` names a prediction in each result file (``members``, ``prediction``) and, as ``scores_by_<field>``, the
    scores of all of them; ``default`` is the prediction that is today's default pipeline; ``folder``, ``label`` and
    ``value`` give a prediction's folder, its label in the reports and its value in the files.
    """

    name: str
    out_dir: Path
    field: str
    names: tuple[str, ...]
    default: str
    n_members: int
    predictors: Callable[[TRVAEEnsemble], dict[str, TRVAEEnsemble]]
    folder: Callable[[str], str] = str
    label: Callable[[str], str] = str
    value: Callable[[str], Any] = str

    @property
    def scores_key(self) -> str:
        return f"scores_by_{self.field}"


def train_members(
    train, keys: dict[str, str], chosen: dict[str, Any], *, n_members: int, setup_kwargs=None, quick: bool = False
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


def scores(variants: Variants, ensemble: TRVAEEnsemble, control, source: str, target: str, scorer) -> dict[str, dict]:
    """``scorer`` of each prediction of ``variants`` made from the trained ``ensemble``."""
    return {
        name: scorer(as_dense(predictor.predict_perturbation(control, source=source, target=target).X))
        for name, predictor in variants.predictors(ensemble).items()
    }


def run_split(variants: Variants, split, quick: bool) -> dict[str, Any]:
    """Train the members on one benchmark split with the default run's blend; the scores of every prediction."""
    default = None if quick else json.loads((DEFAULT_RUN / case_name(split)).read_text())
    chosen = QUICK_BLEND if default is None else default["chosen"]
    ensemble = train_members(
        split.train, split.task_keys, chosen, n_members=variants.n_members, setup_kwargs=split.setup_kwargs, quick=quick
    )
    by_name = scores(
        variants, ensemble, split.control, split.source, split.target,
        lambda x: split_score(x.astype(np.float64), split),
    )  # fmt: skip
    result = {"dataset": split.dataset, "cell_type": split.cell_type, "target": split.target,
              "n_control": int(split.control.n_obs), "chosen": chosen, variants.scores_key: by_name}  # fmt: skip
    if default is not None:
        result["default_run_difference"] = {
            metric: by_name[variants.default][metric] - value for metric, value in default["scores"].items()
        }
    return result


def write_split(variants: Variants, result: dict[str, Any], out_dir: Path, name: str) -> None:
    """One file per prediction (``<folder>/name``, in ``matched_folds.report``'s format)."""
    row = {key: result[key] for key in ROW_KEYS}
    extra = {"default_run_difference": result["default_run_difference"]} if "default_run_difference" in result else {}
    for prediction, values in result[variants.scores_key].items():
        folder = out_dir / variants.folder(prediction)
        folder.mkdir(parents=True, exist_ok=True)
        text = json.dumps({**row, variants.field: variants.value(prediction), "scores": values, **extra}, indent=1)
        (folder / name).write_text(text + "\n")


def split_report(variants: Variants, out_dir: Path) -> str:
    """For each prediction: its wins against the stronger mean shift beside the default run's."""
    parts = [
        f"### {variants.label(name)}\n\n"
        + report(out_dir / variants.folder(name), label=variants.label(name), default_dir=DEFAULT_RUN)
        for name in variants.names
        if (out_dir / variants.folder(name)).exists()
    ]
    return "\n\n".join(parts) if parts else "no splits done"


def run_tuning_case(variants: Variants, case: str, data_dir: Path, quick: bool) -> dict[str, Any]:
    """A tuning case (``kang:NK``, ``synthetic:S:SEED``) with the default run's blend of that case."""
    data = case_data(case, quick, data_dir)
    chosen = QUICK_BLEND if quick else json.loads((DEFAULT_RUN / "tuning" / case_file(case)).read_text())["chosen"]
    keys = synthetic_state.KEYS
    ensemble = train_members(data.train, keys, chosen, n_members=variants.n_members, quick=quick)
    by_name = scores(variants, ensemble, data.control, keys["source"], keys["target"], lambda x: case_score(x, data))
    return {"case": case, "chosen": chosen, variants.scores_key: by_name}


def tuning_report(variants: Variants, out_dir: Path) -> str:
    rows = [
        {"case": case["case"], variants.field: variants.value(name), **values}
        for path in sorted(out_dir.glob("case_*.json"))
        for case in [json.loads(path.read_text())]
        for name, values in case[variants.scores_key].items()
    ]  # fmt: skip
    return pd.DataFrame(rows).round(3).to_markdown(index=False) if rows else "no cases done"


def main(variants: Variants, doc: str, argv: list[str] | None = None) -> None:
    parser = split_parser(doc, variants.out_dir)
    parser.add_argument("--tuning", nargs="+", metavar="CASE", help="run tuning cases (synthetic:S:SEED, kang:NK)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.tuning:
        folder = args.out_dir / "tuning"
        folder.mkdir(parents=True, exist_ok=True)
        for case in [] if args.report else args.tuning:
            path = folder / case_file(case)
            if not path.exists() or args.quick:
                result = run_tuning_case(variants, case, args.data_dir, args.quick)
                path.write_text(json.dumps(result, indent=1) + "\n")
        text = tuning_report(variants, folder)
        (folder / f"{variants.name}_tuning.md").write_text(text + "\n")
        print(text)
        return
    args.out_dir.mkdir(parents=True, exist_ok=True)
    cases = [] if args.report else [quick_split()] if args.quick else rarest_first(args.datasets, args.data_dir)
    for split in cases:
        name = case_name(split)
        done = (args.out_dir / variants.folder(variants.names[-1]) / name).exists()
        if (split.dataset, split.cell_type) == TUNING_SPLIT or (done and not args.quick):
            continue
        result = run_split(variants, split, args.quick)
        write_split(variants, result, args.out_dir, name)
        print(f"{split.dataset} {split.cell_type} {split.target}: {result[variants.scores_key]}", flush=True)
    text = split_report(variants, args.out_dir) if not args.quick else json.dumps(result[variants.scores_key])
    (args.out_dir / f"{variants.name}.md").write_text(text + "\n")
    print(text)
