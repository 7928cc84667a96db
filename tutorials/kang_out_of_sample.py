# %% [markdown]
# # Predicting IFN-β stimulated NK cells never seen in training
#
# The headline experiment of the trVAE paper on Kang et al. (2018) PBMCs: train on every
# (cell type, condition) pair except stimulated NK cells, then predict those from control NK
# cells, and compare with the real ones and with two baselines.
#
# This file is a notebook in jupytext "percent" format: run it as a script
# (`python tutorials/kang_out_of_sample.py`) or open it as a notebook with jupytext.
# It reads `../shared/data/kang2018_pbmc_ifnb_lognorm.h5ad` when present, otherwise it downloads
# the scGen tutorial file with `scvi_trvae.datasets.kang2018()`.

# %%
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np
import scvi

import scvi_trvae
from scvi_trvae import TRVAE

scvi.settings.seed = 0
local = Path("../shared/data/kang2018_pbmc_ifnb_lognorm.h5ad")
adata = scvi_trvae.datasets.kang2018(local if local.exists() else None)
adata

# %% [markdown]
# ## Hold out stimulated NK cells and train

# %%
held_out = ((adata.obs["cell_type"] == "NK") & (adata.obs["condition"] == "stimulated")).to_numpy()
train = adata[~held_out].copy()
TRVAE.setup_anndata(train, condition_key="condition")
model = TRVAE(train)
print(model)
model.train()  # ~1,500 minibatch steps (docs/defaults.md)

# %% [markdown]
# ## Predict and score against the baselines

# %%
control = adata[((adata.obs["cell_type"] == "NK") & (adata.obs["condition"] == "control")).to_numpy()].copy()
real = adata[held_out]
keys = {"cell_type_key": "cell_type", "condition_key": "condition", "cell_type": "NK"}
predictions = {
    "trVAE": model.predict_perturbation(control, source="control", target="stimulated"),
    "trVAE (decoder mean)": model.predict_perturbation(control, source="control", target="stimulated", mode="mean"),
    "control + mean shift": scvi_trvae.baselines.mean_shift(train, source="control", target="stimulated", **keys),
    "no response": scvi_trvae.baselines.no_response(train, source="control", target="stimulated", **keys),
}
degs = scvi_trvae.metrics.top_degs(real, control)
for name, pred in predictions.items():
    scores = scvi_trvae.metrics.evaluate_prediction(pred, real, control, degs=degs)
    print(f"{name:>22}: " + ", ".join(f"{k}={v:.3f}" for k, v in scores.items() if k.startswith(("r2", "pe", "ed"))))

# %% [markdown]
# ## Figures: per-gene means and variances, and ISG15 (Fig. 5 of the paper)

# %%
out = Path("tutorial_output")
out.mkdir(exist_ok=True)
scvi_trvae.pl.reg_mean_plot(predictions["trVAE"], real, control, degs=degs, show=False, save=out / "reg_mean.png")
scvi_trvae.pl.reg_var_plot(predictions["trVAE"], real, control, degs=degs, show=False, save=out / "reg_var.png")
scvi_trvae.pl.gene_distribution_plot(
    {"control": control, "stimulated (real)": real, "trVAE": predictions["trVAE"]},
    genes=["ISG15", "IFI6"],
    show=False,
    save=out / "isg15.png",
)

# %% [markdown]
# ## Latent space `z` and MMD layer `y` (Fig. 2 of the paper)

# %%
cvae = TRVAE(train, mmd_on=None)
cvae.train()
scvi_trvae.pl.representation_plot(
    {"trVAE": model, "CVAE": cvae}, train, color="condition", show=False, save=out / "representations.png"
)
print("mean |y(stimulated) - y(control)| per cell:")
for name, m in {"trVAE": model, "CVAE": cvae}.items():
    y_own = m.get_mmd_representation(control)
    y_stim = m.get_mmd_representation(control, condition="stimulated")
    print(f"  {name}: {np.abs(y_stim - y_own).mean():.4f}")
