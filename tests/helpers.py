"""Helpers shared by the test modules (import as `from helpers import ...`)."""
import os

import pytest

DEVICE = os.environ.get("GPUDNN_TEST_DEVICE", "cpu")


def kernel_backends() -> list:
    """Backends whose kernels run on DEVICE: triton always (interpreter on CPU); cupy on CUDA."""
    params = [pytest.param("triton", id="triton")]
    params.append(pytest.param("cupy", id="cupy", marks=pytest.mark.skipif(
        DEVICE != "cuda", reason="the cupy backend needs a CUDA GPU (run `make test-gpu` there)")))
    return params
