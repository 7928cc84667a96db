"""Property-based tests of the MMD penalty (hypothesis)."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from scvi_trvae.model._mmd import condition_mmd, pairwise_squared_distances, rbf_mixture_kernel, resolve_bandwidths

BANDWIDTHS = st.one_of(
    st.just("adaptive"),
    st.lists(st.floats(1e-3, 1e3), min_size=1, max_size=4).map(tuple),
)
ELEMENTS = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, width=64)
PROFILE = settings(max_examples=60, deadline=None, derandomize=True)  # deterministic test suite


@st.composite
def two_groups(draw, max_cells: int = 12, max_dims: int = 5):
    """Two sets of cells (each of at least two cells) in the same space."""
    n_dims = draw(st.integers(1, max_dims))
    first = draw(arrays(np.float64, (draw(st.integers(2, max_cells)), n_dims), elements=ELEMENTS))
    second = draw(arrays(np.float64, (draw(st.integers(2, max_cells)), n_dims), elements=ELEMENTS))
    return first, second


def _mmd(first: np.ndarray, second: np.ndarray, bandwidths, dtype=torch.float64) -> torch.Tensor:
    values = torch.tensor(np.concatenate([first, second]), dtype=dtype)
    codes = torch.tensor([0] * len(first) + [1] * len(second))
    return condition_mmd(values, codes, 2, bandwidths)


def _raw_statistic(first: np.ndarray, second: np.ndarray, bandwidths) -> float:
    """kaa + kbb - 2 kab with the module's kernel but without the final clamp at zero."""
    values = torch.tensor(np.concatenate([first, second]))
    distances = pairwise_squared_distances(values)
    kernel = rbf_mixture_kernel(distances, resolve_bandwidths(distances, bandwidths))
    n = len(first)
    return float(kernel[:n, :n].mean() + kernel[n:, n:].mean() - 2 * kernel[:n, n:].mean())


@PROFILE
@given(groups=two_groups(), bandwidths=BANDWIDTHS)
def test_non_negative_up_to_rounding(groups, bandwidths):
    first, second = groups
    assert _mmd(first, second, bandwidths).item() >= 0.0
    # the clamp in condition_mmd must only absorb rounding: the kernel itself is positive definite
    assert _raw_statistic(first, second, bandwidths) >= -1e-9


@PROFILE
@given(groups=two_groups(), bandwidths=BANDWIDTHS)
def test_symmetric_in_the_two_conditions(groups, bandwidths):
    first, second = groups
    forward = _mmd(first, second, bandwidths).item()
    backward = _mmd(second, first, bandwidths).item()
    assert np.isclose(forward, backward, rtol=1e-7, atol=1e-12)  # float64 sums in another order


@PROFILE
@given(groups=two_groups(), bandwidths=BANDWIDTHS, data=st.data())
def test_invariant_to_cell_order(groups, bandwidths, data):
    first, second = groups
    values = np.concatenate([first, second])
    codes = np.array([0] * len(first) + [1] * len(second))
    order = np.asarray(data.draw(st.permutations(range(len(values)))))
    original = condition_mmd(torch.tensor(values), torch.tensor(codes), 2, bandwidths).item()
    shuffled = condition_mmd(torch.tensor(values[order]), torch.tensor(codes[order]), 2, bandwidths).item()
    assert np.isclose(original, shuffled, rtol=1e-7, atol=1e-12)  # float64 sums in another order


@PROFILE
@given(
    cells=arrays(np.float64, st.tuples(st.integers(2, 12), st.integers(1, 5)), elements=ELEMENTS),
    bandwidths=BANDWIDTHS,
    data=st.data(),
)
def test_zero_for_identical_sets(cells, bandwidths, data):
    order = np.asarray(data.draw(st.permutations(range(len(cells)))))
    assert abs(_mmd(cells, cells[order], bandwidths).item()) < 1e-9
    if bandwidths == "adaptive":  # fixed narrow bandwidths magnify float32 rounding of the distances
        assert abs(_mmd(cells, cells[order], bandwidths, dtype=torch.float32).item()) < 1e-5


@PROFILE
@given(
    cells=arrays(
        np.float32,
        st.tuples(st.integers(1, 16), st.integers(1, 6)),
        elements=st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=32),
    ),
    n_conditions=st.integers(1, 4),
    bandwidths=BANDWIDTHS,
    data=st.data(),
)
def test_finite_with_finite_gradients(cells, n_conditions, bandwidths, data):
    codes = np.asarray(data.draw(st.lists(st.integers(0, n_conditions - 1), min_size=len(cells), max_size=len(cells))))
    values = torch.tensor(cells, requires_grad=True)
    mmd = condition_mmd(values, torch.tensor(codes), n_conditions, bandwidths)
    assert torch.isfinite(mmd)
    mmd.backward()
    assert torch.isfinite(values.grad).all()
