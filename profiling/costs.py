"""FLOPs and the fewest bytes each op must move through device memory, and what a time means.

Counting rules (METHOD: "each input read once, each output written once"):
- FLOPs are counted only for the matrix products (2 per multiply-add); elementwise and reduction
  ops count 0 FLOPs and are judged against the copy bandwidth alone.
- ``fwd`` reads the inputs and parameters once and writes the outputs once. ``fwd+bwd`` adds the
  backward pass: it reads the output gradient, the inputs it needs and the one saved tensor of a
  fused activation (SPEC section 5), and writes every gradient once.
- Integer targets are int64 (8 bytes); per-row statistics (log-sum-exp, mean, invstd) fp32.

``roofline`` turns a time into achieved rates and a fraction of the measured ceilings: the
floor time is ``max(flops / matmul_rate, bytes / copy_bandwidth)`` and the fraction is
``floor / time`` (1.0 = at the hardware's limit).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

INDEX_BYTES = 8   # int64 class targets
STAT_BYTES = 4    # fp32 per-row / per-channel statistics

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "fp64": 8}


@dataclass(frozen=True)
class Cost:
    """FLOPs and minimum bytes of one call, forward only and forward + backward."""

    fwd_flops: int
    fwd_bytes: int
    fb_flops: int
    fb_bytes: int

    def of(self, mode: str) -> tuple[int, int]:
        """(flops, bytes) of a pass: "fwd", "fwd+bwd" or "step" (an optimizer step = fwd)."""
        if mode in ("fwd", "step"):
            return self.fwd_flops, self.fwd_bytes
        if mode == "fwd+bwd":
            return self.fb_flops, self.fb_bytes
        raise ValueError(f"unknown pass {mode!r}")

    def as_dict(self) -> dict:
        return asdict(self)


def dense(m: int, n: int, k: int, es: int, bias: bool = True, act: bool = True) -> Cost:
    """y[M, N] = act(x[M, K] @ w[N, K]^T + b[N])."""
    b = n if bias else 0
    flops = 2 * m * n * k
    fwd = es * (m * k + n * k + b + m * n)
    bwd = es * (m * n + m * k + n * k + (m * n if act else 0)   # read dy, x, w, saved
                + m * k + n * k + b)                               # write dx, dw, db
    return Cost(flops, fwd, 3 * flops, fwd + bwd)


def conv_out(size: int, kernel: int, stride: int, pad: int, dilation: int) -> int:
    return (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1


def conv_transpose_out(size: int, kernel: int, stride: int, pad: int, dilation: int,
                       output_padding: int) -> int:
    return (size - 1) * stride - 2 * pad + dilation * (kernel - 1) + output_padding + 1


def _gemm_layer(x_elems: int, w_elems: int, y_elems: int, bias_elems: int, macs: int, es: int,
                act: bool) -> Cost:
    flops = 2 * macs
    fwd = es * (x_elems + w_elems + bias_elems + y_elems)
    bwd = es * (y_elems + x_elems + w_elems + (y_elems if act else 0)
                + x_elems + w_elems + bias_elems)
    return Cost(flops, fwd, 3 * flops, fwd + bwd)


def conv2d(n: int, cin: int, h: int, w: int, cout: int, kh: int, kw: int, es: int, *,
           stride: int = 1, padding: int = 0, dilation: int = 1, groups: int = 1,
           bias: bool = True, act: bool = True) -> Cost:
    """x[N, Cin, H, W] * w[Cout, Cin/groups, kh, kw] (+ b[Cout]) -> y[N, Cout, Ho, Wo]."""
    ho = conv_out(h, kh, stride, padding, dilation)
    wo = conv_out(w, kw, stride, padding, dilation)
    w_elems = cout * (cin // groups) * kh * kw
    macs = n * ho * wo * w_elems
    return _gemm_layer(n * cin * h * w, w_elems, n * cout * ho * wo, cout if bias else 0, macs,
                       es, act)


def conv_transpose2d(n: int, cin: int, h: int, w: int, cout: int, kh: int, kw: int, es: int, *,
                     stride: int = 1, padding: int = 0, output_padding: int = 0,
                     dilation: int = 1, groups: int = 1, bias: bool = True,
                     act: bool = True) -> Cost:
    """x[N, Cin, H, W], w[Cin, Cout/groups, kh, kw] -> y[N, Cout, Ho, Wo]."""
    ho = conv_transpose_out(h, kh, stride, padding, dilation, output_padding)
    wo = conv_transpose_out(w, kw, stride, padding, dilation, output_padding)
    w_elems = cin * (cout // groups) * kh * kw
    macs = n * h * w * w_elems
    return _gemm_layer(n * cin * h * w, w_elems, n * cout * ho * wo, cout if bias else 0, macs,
                       es, act)


def elementwise(numel: int, es: int) -> Cost:
    """y = f(x); backward reads dy and the saved x (or y) and writes dx."""
    return Cost(0, 2 * es * numel, 0, 2 * es * numel + 3 * es * numel)


def softmax(numel: int, es: int) -> Cost:
    """softmax / log_softmax: backward reads dy and y, writes dx."""
    return elementwise(numel, es)


def dropout(numel: int, es: int) -> Cost:
    """No mask in memory (regenerated from seed and offset): backward reads dy, writes dx."""
    return Cost(0, 2 * es * numel, 0, 4 * es * numel)


def cross_entropy(rows: int, classes: int, es: int) -> Cost:
    """logits[N, C], target[N] int64 -> scalar loss and lse[N]; backward writes grad logits."""
    logits = es * rows * classes
    fwd = logits + INDEX_BYTES * rows + STAT_BYTES * rows + es
    bwd = logits + INDEX_BYTES * rows + STAT_BYTES * rows + logits
    return Cost(0, fwd, 0, fwd + bwd)


def nll_loss(rows: int, classes: int, es: int) -> Cost:
    """log-probabilities [N, C], target [N] int64 -> scalar loss: forward gathers one element per
    row; backward writes the whole [N, C] gradient (zeros and -w g at the targets)."""
    fwd = INDEX_BYTES * rows + es * rows + es
    bwd = INDEX_BYTES * rows + es * rows * classes
    return Cost(0, fwd, 0, fwd + bwd)


def pointwise_loss(numel: int, es: int) -> Cost:
    """BCE-with-logits / MSE with a mean: reads x and target; backward writes grad x only."""
    fwd = 2 * es * numel + es
    bwd = 2 * es * numel + es * numel
    return Cost(0, fwd, 0, fwd + bwd)


def batch_norm(n: int, c: int, spatial: int, es: int, affine: bool = True) -> Cost:
    """Training mode: read x, write y, update running stats; backward reads dy and x, writes dx
    (the pre-activation is recomputed from x) and the per-channel gradients."""
    numel = n * c * spatial
    params = es * c * (2 if affine else 0)
    stats = es * c * 4 + STAT_BYTES * c * 2   # running mean/var read+write; mean, invstd written
    fwd = 2 * es * numel + params + stats
    bwd = 3 * es * numel + STAT_BYTES * c * 2 + params * 2   # read w, b; write dw, db
    return Cost(0, fwd, 0, fwd + bwd)


def pool2d(n: int, c: int, h: int, w: int, kernel: int, stride: int, padding: int, es: int,
           recompute_input: bool) -> Cost:
    """Max pool (backward re-reads x to find the argmax) or average pool (it does not)."""
    ho = conv_out(h, kernel, stride, padding, 1)
    wo = conv_out(w, kernel, stride, padding, 1)
    x, y = n * c * h * w, n * c * ho * wo
    fwd = es * (x + y)
    bwd = es * (y + x + (x if recompute_input else 0))
    return Cost(0, fwd, 0, fwd + bwd)


def adaptive_avg_pool2d(n: int, c: int, h: int, w: int, out_h: int, out_w: int,
                        es: int) -> Cost:
    """Reads x, writes y; backward reads dy and writes dx."""
    x, y = n * c * h * w, n * c * out_h * out_w
    fwd = es * (x + y)
    return Cost(0, fwd, 0, fwd + es * (y + x))


def embedding(vocab: int, dim: int, ids: int, es: int) -> Cost:
    """y[N, D] = weight[ids]: reads the ids (int64) and N rows, writes y; backward reads the ids
    and dy and writes the whole dense weight gradient [V, D]."""
    fwd = INDEX_BYTES * ids + 2 * es * ids * dim
    bwd = INDEX_BYTES * ids + es * ids * dim + es * vocab * dim
    return Cost(0, fwd, 0, fwd + bwd)

def lstm(steps: int, batch: int, input_size: int, hidden: int, es: int, gates: int = 4,
         states: int = 2) -> Cost:
    """One layer, one direction, zero initial state: y[T, B, H] from x[T, B, I] (``gates=3,
    states=1``: the GRU, ``gru``).

    FLOPs: the input projection (2·T·B·4H·I) and the recurrence (2·T·B·4H·H); backward does
    twice that (input gradient and weight gradient). Bytes: x, weights and biases read, y and
    (h_n, c_n) written; backward reads dy, x, y and the weights and writes dx and every weight
    gradient (gates are recomputable, so they are not counted)."""
    gates = gates * hidden
    w = gates * (input_size + hidden) + 2 * gates
    x, y, state = steps * batch * input_size, steps * batch * hidden, states * batch * hidden
    flops = 2 * steps * batch * gates * (input_size + hidden)
    fwd = es * (x + w + y + state)
    bwd = es * (y + x + y + w + x + w)
    return Cost(flops, fwd, 3 * flops, fwd + bwd)


def gru(steps: int, batch: int, input_size: int, hidden: int, es: int) -> Cost:
    """The GRU's ``lstm`` cost: three gates (r, z, n), one state (h_n)."""
    return lstm(steps, batch, input_size, hidden, es, gates=3, states=1)


def optimizer_step(params: int, es: int, kind: str) -> Cost:
    """One step over ``params`` elements, state in the parameters' dtype:
    SGD with momentum reads p, g, buf and writes p, buf; Adam reads p, g, m, v, writes p, m, v."""
    moves = {"sgd": 5, "adam": 7, "adamw": 7}[kind]
    c = moves * es * params
    return Cost(0, c, 0, c)


# --- what a time means ------------------------------------------------------------------------

@dataclass(frozen=True)
class Ceilings:
    """Measured limits of this GPU: copy bandwidth (bytes/s, read + write counted) and matmul
    rates (FLOP/s) keyed by "bf16", "fp16", "tf32", "fp32"."""

    copy_bytes_per_s: float
    matmul_flops_per_s: dict

    def as_dict(self) -> dict:
        return {"copy_GBps": self.copy_bytes_per_s / 1e9,
                "matmul_TFLOPs": {k: v / 1e12 for k, v in self.matmul_flops_per_s.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> "Ceilings":
        return cls(d["copy_GBps"] * 1e9, {k: v * 1e12 for k, v in d["matmul_TFLOPs"].items()})


def matmul_key(dtype: str, tf32: bool) -> str:
    """Which matmul ceiling applies to a GEMM-like op in ``dtype``."""
    if dtype == "fp32":
        return "tf32" if tf32 else "fp32"
    return dtype


def roofline(flops: int, nbytes: int, seconds: float, ceilings: Ceilings,
             matmul: str | None) -> dict:
    """Achieved TFLOP/s and GB/s, the floor time, the bound and the fraction of the ceiling.

    ``matmul`` names the matmul ceiling of a GEMM-like op ("bf16", "tf32", ...); None for ops
    bounded by memory alone."""
    if seconds <= 0:
        raise ValueError(f"time must be positive, got {seconds}")
    memory_s = nbytes / ceilings.copy_bytes_per_s
    compute_s = 0.0
    if matmul is not None and flops:
        compute_s = flops / ceilings.matmul_flops_per_s[matmul]
    floor_s = max(memory_s, compute_s)
    return {
        "TFLOPs": flops / seconds / 1e12,
        "GBps": nbytes / seconds / 1e9,
        "floor_ms": floor_s * 1e3,
        "bound": "compute" if compute_s > memory_s else "memory",
        "ceiling": matmul if compute_s > memory_s else "copy",
        "ceiling_fraction": floor_s / seconds,
    }


def speedups(times_ms: dict, subject: str, baselines=("eager", "compile", "compile-max",
                                                        "fused")) -> dict:
    """``baseline_time / subject_time`` for every baseline timed (> 1: the subject is faster).
    "compile-best" is against the faster of the two torch.compile modes."""
    mine = times_ms.get(subject)
    if not mine:
        return {}
    out = {b: times_ms[b] / mine for b in baselines if times_ms.get(b)}
    compiled = [times_ms[b] for b in ("compile", "compile-max") if times_ms.get(b)]
    if compiled:
        out["compile-best"] = min(compiled) / mine
    return out
