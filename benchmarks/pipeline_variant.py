"""The recommended pipeline with another model setting for all its fits, on the benchmark's splits (issue 22).

``fit_recommended`` trains its inner-fold models and its three members with TRVAE's defaults. This runs it with
one or more settings changed (``--model use_batch_norm=false``: the members and the inner folds alike; the blend is
chosen on the inner folds as usual), or with another setting of the selection itself (``--selection
'reference_shifts=["pooled", "similarity", "balanced"]'``: the candidate blends; the fits are the default's), on the
benchmark's splits, rarest held-out types first, and scores it as the benchmark does. The default pipeline and the
stronger mean shift (the best of the pooled, balanced and similarity-weighted shifts, per split and metric, with
hindsight) are read from ``benchmarks/results/blend_ceiling/`` (the default pipeline's own-process run on the CPU:
same data, seeds and code path), as in ``matched_folds.py``.
Each split is cached as JSON in ``--out-dir`` (default: ``benchmarks/results/pipeline_variants/<settings>``);
``--report`` prints the win counts of the splits done so far. Kang NK, the tuning split, is not run
(``selection_rules.py``-style tuning checks cover it).

    python benchmarks/pipeline_variant.py --model use_batch_norm=false --datasets haber_hpoly kang
    python benchmarks/pipeline_variant.py --model use_batch_norm=false --report
    python benchmarks/pipeline_variant.py --model use_batch_norm=false --tuning synthetic:1:0 kang:NK   # tuning data
    python benchmarks/pipeline_variant.py --model use_batch_norm=false --quick --out-dir /tmp/v   # tiny (tested)
    python benchmarks/pipeline_variant.py --selection 'reference_shifts=["pooled","similarity","balanced"]' --report
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import torch

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import synthetic_state  # noqa: E402
from blend_ceiling import TUNING_SPLIT  # noqa: E402
from blend_grid import case_data, case_file, mean_shift_rows, score  # noqa: E402
from matched_folds import case_name, fit_on_split, quick_split, rarest_first, report  # noqa: E402
from oos.splits import Split, split_parser  # noqa: E402
from selection_rules import BLEND, held_out_table  # noqa: E402

from scvi_trvae import model_selection  # noqa: E402
from scvi_trvae.utils import as_dense  # noqa: E402

OUT_DIR = BENCH / "results" / "pipeline_variants"
#: Today's default pipeline on the 57 non-tuning splits (``spread_scalings=(False, True)``, its default since 6a17dae).
DEFAULT_RUN = OUT_DIR / "selection-spread_scalings-False-True"
SELECTION_RULES_DIR = BENCH / "results" / "selection_rules"
TUNING_SCORES = ("pearson_delta_deg", "edist_scaled", "paired_rmse")
#: ``fit_recommended`` arguments that ``--selection`` may set: which blends the inner folds choose from, and how.
SELECTION_SETTINGS = ("shift_weights", "deviation_weights", "reference_shifts", "spread_scalings", "max_inner_folds",
                      "fold_choice", "fold_source_cells")  # fmt: skip


def _key_value(text: str, option: str, allowed: Callable[[str], bool], keys: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not allowed(key):
        raise ValueError(f"{option} takes KEY=VALUE, KEY {keys}: {text!r}")
    return key, json.loads(value)


def model_setting(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` of ``--model``, the value read as JSON (``false``, ``0.2``, ``"z"``)."""
    return _key_value(
        text, "--model", lambda key: key in model_selection.model_arguments({key: None}),
        "a TRVAE argument of the selection's configurations",
    )  # fmt: skip


def selection_setting(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` of ``--selection``, the value read as JSON; ``KEY`` one of :data:`SELECTION_SETTINGS`."""
    return _key_value(text, "--selection", SELECTION_SETTINGS.__contains__, f"one of {', '.join(SELECTION_SETTINGS)}")


def variant_name(settings: dict[str, Any], selection: dict[str, Any] | None = None) -> str:
    """The folder name of a variant: its model settings, then its selection settings (``selection-`` prefixed)."""
    parts = [f"{key}-{json.dumps(value)}" for key, value in sorted(settings.items())]
    parts += [f"selection-{key}-{_folder_part(value)}" for key, value in sorted((selection or {}).items())]
    return "__".join(parts)


def _folder_part(value: Any) -> str:
    if isinstance(value, list):
        return "-".join(map(str, value))
    return value if isinstance(value, str) else json.dumps(value)


def same_fits_as_default(split: Split, settings: dict[str, Any], selection: dict[str, Any]) -> dict[str, Any] | None:
    """The default run's result of ``split`` when the variant would fit exactly what the default fitted, else None.

    That is a variant that only chooses the inner folds another way (``fold_choice``) and holds out the same cell
    types as the default on this split: the same fits with the same seeds, so the same prediction (the default run
    is on the CPU, each split in its own process, as a variant's). The result says which run it is taken from.
    """
    path = DEFAULT_RUN / case_name(split)
    if settings or set(selection) != {"fold_choice"} or not path.exists():
        return None
    keys = tuple(split.task_keys[key] for key in ("cell_type_key", "condition_key", "source", "target"))
    folds = {  # planned as fit_recommended plans them (seed 0, its inner folds)
        choice: model_selection._plan(split.train, keys, 1, None, model_selection.RECOMMENDED_INNER_FOLDS, 0, choice)[0]
        for choice in ("random", selection["fold_choice"])
    }
    if folds["random"] != folds[selection["fold_choice"]]:
        return None
    result = json.loads(path.read_text())
    chosen = {**result["chosen"], "inner_cell_types": folds["random"]}
    return {**result, "selection": selection, "chosen": chosen, "same_fits_as": DEFAULT_RUN.name}


def search_space(settings: dict[str, Any], n_obs: int, quick: bool) -> dict[str, tuple]:
    """The selection's one configuration: ``settings`` (and 2 epochs of ``n_obs`` cells when ``quick``)."""
    space = {key: (value,) for key, value in settings.items()}
    if quick:
        space["training_steps"] = (model_selection.training_steps(n_obs, 2),)
    return space


def _chosen(selection) -> dict[str, Any]:
    return {"shift_weight": selection.best_shift_weight, "deviation_weight": selection.best_deviation_weight,
            "reference_shift": selection.best_reference_shift, "spread_scaling": selection.best_spread_scaling,
            "config": selection.best_config, "inner_cell_types": selection.inner_cell_types}  # fmt: skip


def variant_prediction(
    split: Split, settings: dict[str, Any], quick: bool = False, selection_settings: dict[str, Any] | None = None
) -> tuple[dict, dict[str, float]]:
    """Fit the pipeline with ``settings`` (and ``selection_settings``) on the split's training cells; its choice and
    scores."""
    space = search_space(settings, split.train.n_obs, quick)
    selection, scores = fit_on_split(split, search_space=space, **(selection_settings or {}))
    return _chosen(selection), scores


def tuning_case(
    case: str, settings: dict[str, Any], data_dir: Path, quick: bool = False,
    selection_settings: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The variant on a tuning case of ``selection_rules.py`` (``synthetic:S:SEED``, ``kang:NK``), scored as there."""
    data = case_data(case, quick, data_dir)
    ensemble, selection = model_selection.fit_recommended(
        data.train, **synthetic_state.KEYS, seed=0, progress_bar=False, accelerator="cpu",
        search_space=search_space(settings, data.train.n_obs, quick), **(selection_settings or {}),
    )  # fmt: skip
    pred = ensemble.predict_perturbation(data.control, source="control", target="stimulated")
    return {"case": case, "settings": settings, "selection": selection_settings or {}, "chosen": _chosen(selection),
            "scores": score(as_dense(pred.X), data), "mean_shifts": mean_shift_rows(data)}  # fmt: skip


def tuning_report(out_dir: Path, default_dir: Path | None = SELECTION_RULES_DIR) -> str:
    """Per tuning case: the variant, the default pipeline (``selection_rules.py``'s cached fit of the same case, from
    ``default_dir``; None: not shown) and the mean shifts."""
    rows = []
    for path in sorted(out_dir.glob("case_*.json")):
        case = json.loads(path.read_text())
        default = None if default_dir is None else default_dir / path.name
        if default is not None and default.exists():
            cached = json.loads(default.read_text())
            chosen = {k: cached["chosen"][k] for k in BLEND}
            scores = held_out_table(cached).loc[tuple(chosen.values())].to_dict()
            rows.append({"case": case["case"], "prediction": "default pipeline", **chosen, **scores})
        rows.append({"case": case["case"], "prediction": "variant", **case["chosen"], **case["scores"]})
        rows += [{"case": case["case"], "prediction": name, **s} for name, s in case["mean_shifts"].items()]
    if not rows:
        return "no cases done"
    columns = ["case", "prediction", "reference_shift", "spread_scaling", "shift_weight", "deviation_weight",
               *TUNING_SCORES]  # fmt: skip
    return pd.DataFrame(rows).reindex(columns=columns).round(3).to_markdown(index=False)


def main(argv: list[str] | None = None) -> None:
    parser = split_parser(__doc__, OUT_DIR)
    parser.add_argument("--model", nargs="+", default=[], help="KEY=VALUE settings of every fit")
    parser.add_argument("--selection", nargs="+", default=[], help=f"KEY=VALUE, KEY one of {SELECTION_SETTINGS}")
    parser.add_argument("--tuning", nargs="+", metavar="CASE", help="run tuning cases (synthetic:S:SEED, kang:NK)")
    parser.add_argument(
        "--against-default-run", action="store_true",
        help=f"report against today's default pipeline ({DEFAULT_RUN.name}), not the ceiling's earlier default",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if not args.model and not args.selection:
        parser.error("name a variant: --model KEY=VALUE and/or --selection KEY=VALUE")
    settings = dict(model_setting(text) for text in args.model)
    selection_settings = dict(selection_setting(text) for text in args.selection)
    name = variant_name(settings, selection_settings)
    out_dir = args.out_dir / name if args.out_dir == OUT_DIR else args.out_dir
    torch.set_num_threads(1)
    if args.tuning:
        (out_dir / "tuning").mkdir(parents=True, exist_ok=True)
        for case in [] if args.report else args.tuning:
            path = out_dir / "tuning" / case_file(case)
            if not path.exists() or args.quick:
                result = tuning_case(case, settings, args.data_dir, args.quick, selection_settings)
                path.write_text(json.dumps(result, indent=1) + "\n")
        text = tuning_report(out_dir / "tuning", None if args.quick else SELECTION_RULES_DIR)
        (out_dir / "tuning" / "pipeline_variant_tuning.md").write_text(text + "\n")
        print(text)
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    cases = [] if args.report else [quick_split()] if args.quick else rarest_first(args.datasets, args.data_dir)
    for split in cases:
        path = out_dir / case_name(split)
        if (split.dataset, split.cell_type) == TUNING_SPLIT or (path.exists() and not args.quick):
            continue
        result = None if args.quick else same_fits_as_default(split, settings, selection_settings)
        if result is None:
            chosen, scores = variant_prediction(split, settings, args.quick, selection_settings)
            result = {"dataset": split.dataset, "cell_type": split.cell_type, "target": split.target,
                      "n_control": int(split.control.n_obs), "settings": settings, "selection": selection_settings,
                      "chosen": chosen, "scores": scores}  # fmt: skip
        path.write_text(json.dumps(result, indent=1) + "\n")
        print(f"{split.dataset} {split.cell_type} {split.target}: {result['chosen']} {result['scores']}", flush=True)
    text = report(out_dir, label="variant", default_dir=DEFAULT_RUN if args.against_default_run else None)
    (out_dir / "pipeline_variant.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
