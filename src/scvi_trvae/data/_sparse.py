"""Sparse input to the encoder's first layer: the expression matrix stays sparse until the first matmul.

torch's CPU kernels for a sparse (CSR) times dense product beat the dense product only on large,
sparse minibatches (measured on 1 thread, first layer forward + weight gradient, ``docs/performance.md``):
at 4.7% non-zero and 6,998 genes, 1.9x faster at batch 512 but no faster at batch 128, and slower
than dense above 10% non-zero. :func:`use_sparse_input` encodes that rule.
"""

from __future__ import annotations

import torch
from scvi.nn import FCLayers
from torch import nn

#: Largest fraction of non-zero entries for which the sparse first layer is used.
SPARSE_MAX_DENSITY = 0.1
#: Smallest minibatch for which the sparse first layer is used.
SPARSE_MIN_BATCH_SIZE = 256


def use_sparse_input(density: float | None, batch_size: int) -> bool:
    """Whether a matrix with this fraction of non-zeros (``None``: dense) trains faster sparse."""
    return density is not None and density <= SPARSE_MAX_DENSITY and batch_size >= SPARSE_MIN_BATCH_SIZE


def is_sparse(x: torch.Tensor) -> bool:
    """Whether ``x`` is a sparse CSR tensor (as scvi-tools' loaders give with ``load_sparse_tensor``)."""
    return x.layout == torch.sparse_csr


def to_dense(x: torch.Tensor) -> torch.Tensor:
    """``x`` as a dense tensor (itself when it is one)."""
    return x.to_dense() if is_sparse(x) else x


def row_sums(x: torch.Tensor) -> torch.Tensor:
    """Sum of each row, shape ``(n, 1)``, of a dense or sparse CSR matrix."""
    if not is_sparse(x):
        return x.sum(dim=1, keepdim=True)
    counts = x.crow_indices().diff()
    rows = torch.repeat_interleave(torch.arange(x.shape[0], device=x.device), counts)
    sums = torch.zeros(x.shape[0], dtype=x.values().dtype, device=x.device)
    return sums.index_add_(0, rows, x.values()).unsqueeze(1)


class _SparseTimesWeight(torch.autograd.Function):
    """``x @ weight.T`` for a sparse CSR ``x``; the weight gradient is a sparse product too.

    The transposed CSR matrix is built once in the forward pass: torch's product of a transposed
    (CSC) matrix with a dense one is several times slower than of a CSR one.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        x_transposed = x.t().to_sparse_csr()
        ctx.save_for_backward(x_transposed)
        return torch.sparse.mm(x, weight.t().contiguous())

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x_transposed,) = ctx.saved_tensors
        return None, torch.sparse.mm(x_transposed, grad.contiguous()).t()


def sparse_fc_layers(layers: FCLayers, x: torch.Tensor, *categorical: torch.Tensor) -> torch.Tensor:
    """Run :class:`scvi.nn.FCLayers` on a sparse CSR ``x``; same result as ``layers(x, *categorical)``.

    The first linear layer is split into its gene columns (a sparse product) and the one-hot
    columns of the categorical inputs, which :class:`~scvi.nn.FCLayers` places after the genes.
    The sparse product runs in float32 outside autocast (torch has no bfloat16 sparse kernel).
    """
    one_hots = [
        nn.functional.one_hot(codes.reshape(-1).long(), n_categories)
        for codes, n_categories in zip(categorical, layers.n_cat_list, strict=True)
        if n_categories > 1
    ]
    hidden = x
    for index, block in enumerate(layers.fc_layers):
        for layer in block:
            if layer is None:
                continue
            if isinstance(layer, nn.Linear) and index == 0:
                hidden = _first_linear(layer, hidden, one_hots)
            elif isinstance(layer, nn.Linear) and layers.inject_into_layer(index):
                hidden = layer(torch.cat([hidden, *(o.to(hidden.dtype) for o in one_hots)], dim=-1))
            else:
                hidden = layer(hidden)
    return hidden


def _first_linear(layer: nn.Linear, x: torch.Tensor, one_hots: list[torch.Tensor]) -> torch.Tensor:
    n_genes = x.shape[1]
    weight = layer.weight
    with torch.autocast(x.device.type, enabled=False):
        if torch.is_grad_enabled() and weight.requires_grad:
            output = _SparseTimesWeight.apply(x.float(), weight[:, :n_genes].float())
        else:  # prediction: no weight gradient, so no transposed copy of x
            output = torch.sparse.mm(x.float(), weight[:, :n_genes].float().t().contiguous())
        if one_hots:
            covariates = torch.cat(one_hots, dim=-1).float()
            output = output + covariates @ weight[:, n_genes:].float().t()
        if layer.bias is not None:
            output = output + layer.bias.float()
    return output.to(weight.dtype)
