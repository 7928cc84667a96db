"""Shared helpers of the test suite."""

from __future__ import annotations


def quick_train(model, **kwargs):
    kwargs.setdefault("max_epochs", 2)
    kwargs.setdefault("batch_size", 32)
    kwargs.setdefault("enable_progress_bar", False)
    model.train(**kwargs)
    return model
