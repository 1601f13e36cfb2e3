"""Test configuration.

CPU (CI): TRITON_INTERPRET=1 so Triton kernels run under the interpreter on CPU tensors.
GPU (`make test-gpu`): GPUDNN_TEST_DEVICE=cuda runs the same tests on CUDA tensors.
"""
import os

from helpers import DEVICE

if DEVICE == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before anything imports triton

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import gpudnn  # noqa: E402


@pytest.fixture
def device() -> str:
    """The device kernel tests run on: "cpu" (interpreter) or "cuda"."""
    return DEVICE


@pytest.fixture
def rng() -> np.random.Generator:
    """A fresh NumPy generator; seeded per test so failures reproduce."""
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def _reset_backend_and_seed():
    torch.manual_seed(0)
    gpudnn.set_backend("auto")
    yield
    gpudnn.set_backend("auto")


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA device")
