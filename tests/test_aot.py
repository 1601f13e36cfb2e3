"""Every Triton kernel configuration the launchers can pick compiles for sm_90 (no GPU needed):
no compile errors, no register spills unless the configuration says why, and the MMA kind each
configuration promises (HGMMA for the bf16/fp16 GEMMs)."""
import pytest

from gpudnn.kernels.triton import aot


@pytest.fixture(scope="module")
def report():
    return aot.run_report_subprocess()


def test_every_configuration_compiles_for_sm90(report):
    # (the count comes from the subprocess: under the interpreter @triton.jit functions are
    # interpreted and the configurations cannot be listed here)
    assert len(report) >= len(aot.FAMILIES)
    assert {r["name"] for r in report} >= {"_dense_forward_kernel", "_conv_gemm_kernel"}
    errors = [f"{r['name']} [{r['label']}] {r['dtype']}: {r['error']}" for r in report
              if "error" in r]
    assert not errors, "\n".join(errors)


def test_no_unexplained_spills(report):
    spilled = [f"{r['name']} [{r['label']}] {r['dtype']}: {r['spill_stores']} STL, "
               f"{r['spill_loads']} LDL, {r['local_bytes']} B local"
               for r in report if "error" not in r and r["spills"] and not r["spill_reason"]]
    assert not spilled, "\n".join(spilled)


def test_mma_kind_as_promised(report):
    wrong = [f"{r['name']} [{r['label']}] {r['dtype']}: wants {r['expect_mma']}, has "
             f"{r['mma'] or 'no MMA'}" for r in report
             if "error" not in r and r["expect_mma"] and r["mma"] != r["expect_mma"]]
    assert not wrong, "\n".join(wrong)
