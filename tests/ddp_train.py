"""Train a tiny TRVAE on one CPU process or on two (DDP, gloo); run by ``test_distributed.py``.

    python ddp_train.py {single,ddp,ddp-no-strategy} OUT.json EPOCHS

Lightning's DDP launcher starts the second process by running this script again; rank 0 writes
the per-epoch training losses, the steps taken and the cells each rank drew to ``OUT.json``.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import scvi
import torch
from make_fixtures import tiny_adata

from scvi_trvae import TRVAE

#: Cells per minibatch and process: one process at 16 and two at 8 take the same steps on 16 cells.
BATCH_SIZE = {"single": 16, "ddp": 8, "ddp-no-strategy": 8}


def main() -> None:
    mode, output, epochs = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    scvi.settings.seed = 0
    adata = tiny_adata()
    TRVAE.setup_anndata(adata, condition_key="condition")
    model = TRVAE(adata, n_hidden=16, n_latent=4)
    kwargs = {"accelerator": "cpu", "max_epochs": epochs, "batch_size": BATCH_SIZE[mode], "train_size": 1.0}
    if mode != "single":
        kwargs["devices"] = 2
    if mode == "ddp":
        kwargs["strategy"] = "ddp"
    model.train(enable_progress_bar=False, enable_model_summary=False, **kwargs)
    if model.trainer.global_rank == 0:
        sampler = model.trainer.train_dataloader.sampler
        result = {
            "losses": model.history["train_loss"].to_numpy(dtype=float).ravel().tolist(),
            "steps": int(model.trainer.global_step),
            "epochs": epochs,
            "world_size": int(model.trainer.world_size),
            "sampler": type(sampler).__name__,
        }
        output.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
