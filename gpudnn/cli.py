"""``python -m gpudnn``: train the CNN, LSTM and GAN, sample from them, or run the demo.

    python -m gpudnn train {cnn,lstm,gan} [--epochs N] [--batch-size B] [--lr LR]
        [--backend auto|reference|triton|cupy|torch] [--device cpu|cuda] [--out DIR] [--resume]
        [--data DIR] [--seed S] [model options]
    python -m gpudnn sample {lstm,gan} --out DIR [--prompt TEXT] [--length N] [--temperature T]
    python -m gpudnn demo [--out DIR]
    python -m gpudnn quantize --out DIR [--dtype int8|fp8] [--granularity per_channel|per_tensor]
    python -m gpudnn prune --out DIR [--method magnitude|2:4] [--amount A] [--fine-tune-epochs N]

``--backend torch`` trains the pure torch.nn twin (same network, torch's kernels) for comparison.
Errors the user can fix (missing or corrupt checkpoint, missing data, unavailable backend or
device) print one ``gpudnn: error: ...`` line and exit with code 2; Ctrl-C exits with 130 and says
how to resume.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from typing import Any, Sequence

import torch

from . import backend as gbackend
from . import data as gdata

BACKEND_CHOICES = ("auto", "reference", "triton", "cupy", "torch")


class UsageError(Exception):
    """A problem the user can fix; printed as one line, exit code 2."""


# --- argument parsing -------------------------------------------------------------------------

# option -> (config key, type, help); None defaults: "take the model's default / the checkpoint's"
_COMMON_OPTIONS = {
    "--epochs": ("epochs", int, "train until this many epochs are done"),
    "--batch-size": ("batch_size", int, "samples (sequences for lstm) per step"),
    "--lr": ("lr", float, "learning rate (Adam)"),
    "--seed": ("seed", int, "seed of the initial weights, shuffling, dropout and noise"),
}
_MODEL_OPTIONS = {
    "cnn": {"--hidden": ("hidden", int, "units of the hidden Linear layer"),
            "--dropout": ("dropout", float, "dropout before the hidden Linear layer"),
            "--widths": ("widths", lambda s: [int(w) for w in s.split(",")],
                         "comma-separated channels of the conv blocks, e.g. 32,64")},
    "lstm": {"--hidden": ("hidden", int, "LSTM hidden size"),
             "--num-layers": ("num_layers", int, "stacked LSTM layers"),
             "--embed-dim": ("embed_dim", int, "character embedding size"),
             "--seq-len": ("seq_len", int, "characters per training sequence"),
             "--max-chars": ("max_chars", int, "characters of stdlib source to train on"),
             "--dropout": ("dropout", float, "dropout between LSTM layers")},
    "gan": {"--image-size": ("image_size", int, "16 or 32: the digits are upscaled to it"),
            "--latent-dim": ("latent_dim", int, "size of the generator's noise vector"),
            "--width": ("width", int, "channels of the first discriminator conv")},
}


def _add_runtime_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=BACKEND_CHOICES, default="auto",
                        help="gpudnn backend (auto: triton on CUDA, reference on CPU), or "
                             "'torch' for the pure torch.nn twin")
    parser.add_argument("--device", default=None,
                        help="cpu or cuda (default: cuda when available)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m gpudnn", description=(
        "Train and sample gpudnn's CNN, LSTM and GAN on offline data."))
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model (checkpoint every epoch)")
    models = train.add_subparsers(dest="model", required=True)
    for model in ("cnn", "lstm", "gan"):
        p = models.add_parser(model, help=f"train the {model.upper()}")
        for flag, (key, kind, text) in {**_COMMON_OPTIONS, **_MODEL_OPTIONS[model]}.items():
            p.add_argument(flag, dest=key, type=kind, default=None, help=text)
        _add_runtime_options(p)
        p.add_argument("--out", default=os.path.join("runs", model),
                       help="folder for the checkpoint, metrics and samples")
        p.add_argument("--resume", action="store_true",
                       help="continue from OUT/checkpoint.pt after its last epoch")
        p.add_argument("--no-progress", dest="progress", action="store_false",
                       help="no progress bar on stderr")
        if model == "cnn":
            p.add_argument("--data", default=None, help="a folder holding MNIST idx files or "
                           "CIFAR-10 python batches (default: scikit-learn's 8x8 digits)")
            p.add_argument("--separable", action="store_const", const=True, default=None,
                           help="depthwise-separable Xception blocks instead of plain convs")

    sample = commands.add_parser("sample", help="text from the LSTM / a PNG grid from the GAN")
    sample.add_argument("model", choices=("lstm", "gan"))
    sample.add_argument("--out", default=None,
                        help="the training folder (default runs/MODEL); outputs are written here")
    sample.add_argument("--checkpoint", default=None, help="default: OUT/checkpoint.pt")
    sample.add_argument("--prompt", default="def ", help="lstm: text to continue")
    sample.add_argument("--length", type=int, default=400, help="lstm: characters to generate")
    sample.add_argument("--temperature", type=float, default=0.8, help="lstm: 0 = greedy")
    sample.add_argument("--count", type=int, default=64, help="gan: images in the grid")
    sample.add_argument("--seed", type=int, default=0)
    _add_runtime_options(sample)

    demo = commands.add_parser("demo", help="short runs of all three models (a few minutes)")
    demo.add_argument("--out", default=None, help="default: a new temporary folder")
    _add_runtime_options(demo)
    demo.add_argument("--no-progress", dest="progress", action="store_false")

    from .pruning import METHODS
    from .quantization import DTYPES, GRANULARITIES
    for name, text, written in (
            ("quantize", "weight-only int8 / fp8 quantization of a trained cnn or gan "
             "(the gan's discriminator): accuracy and size before / after", "quantized.pt"),
            ("prune", "prune a trained cnn or gan (the gan's discriminator), fine-tune with "
             "the masks kept, finalize: accuracy and size before / after", "pruned.pt")):
        p = commands.add_parser(name, help=text, description=text)
        p.add_argument("--out", default=os.path.join("runs", "cnn"),
                       help=f"the training folder: reads OUT/checkpoint.pt, writes OUT/{written}")
        p.add_argument("--checkpoint", default=None, help="default: OUT/checkpoint.pt")
        _add_runtime_options(p)
    quantize = commands.choices["quantize"]
    quantize.add_argument("--dtype", choices=tuple(DTYPES), default="int8",
                          help="int8 (symmetric absmax) or fp8 (float8 e4m3fn) weights")
    quantize.add_argument("--granularity", choices=GRANULARITIES, default="per_channel",
                          help="one scale per output channel, or one per tensor")
    prune = commands.choices["prune"]
    prune.add_argument("--method", choices=METHODS, default="magnitude",
                       help="magnitude (smallest |w| per layer) or 2:4 semi-structured")
    prune.add_argument("--amount", type=float, default=0.5,
                       help="fraction of each layer's weights to prune, in [0, 1) (2:4: 0.5)")
    prune.add_argument("--fine-tune-epochs", dest="fine_tune_epochs", type=int, default=1,
                       help="epochs of training with the masks kept before finalizing")
    prune.add_argument("--no-progress", dest="progress", action="store_false")
    return parser


# --- shared set-up ----------------------------------------------------------------------------

def _device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise UsageError(f"bad --device {name!r}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda, but torch sees no CUDA GPU (torch.cuda.is_available() "
                         "is False); use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"--device {name!r}: gpudnn runs on cpu or cuda")
    return device


def _select_backend(name: str, device: torch.device) -> str:
    """Set the gpudnn backend; return the flavor ("gpudnn" or "torch")."""
    if name == "torch":
        return "torch"
    if name != "auto":
        why = gbackend._why_not(name, device.type)
        if why is not None:
            raise UsageError(f"backend {name!r} cannot run on {device.type}: {why}")
    gbackend.set_backend(name)
    return "gpudnn"


def _backend_label(name: str, device: torch.device) -> str:
    if name == "auto":
        return f"auto ({'triton' if device.type == 'cuda' else 'reference'})"
    return name


def _make_task(model: str, config: dict[str, Any], device: torch.device, flavor: str,
               with_data: bool = True):
    from .models.training import TASKS
    try:
        return TASKS[model](config, device, flavor, with_data)
    except (OSError, ValueError, ImportError) as exc:
        # missing data folder / files, a malformed idx file, scikit-learn not installed, ...
        raise UsageError(str(exc)) from None


def _resume_config(args_config: dict[str, Any], model: str, out: str) -> dict[str, Any]:
    """The checkpoint's config; an explicit option that contradicts it is an error."""
    from .models.training import CHECKPOINT_NAME, load_checkpoint
    payload = load_checkpoint(os.path.join(out, CHECKPOINT_NAME), model)
    config = dict(payload["config"])
    for key, value in args_config.items():
        if key != "epochs" and key in config and config[key] != value:
            raise UsageError(f"--{key.replace('_', '-')} {value!r} differs from the "
                             f"checkpoint's {config[key]!r}; drop the option to resume, or "
                             "train into a new --out folder")
    return config


# --- commands ---------------------------------------------------------------------------------

def cmd_train(args: argparse.Namespace) -> int:
    from .models.training import TASKS, fit
    device = _device(args.device)
    flavor = _select_backend(args.backend, device)
    keys = [key for key, *_ in {**_COMMON_OPTIONS, **_MODEL_OPTIONS[args.model]}.values()]
    keys += ["separable", "data"] if args.model == "cnn" else []
    given = {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}
    if "data" in given:
        given["data"] = os.path.abspath(given["data"])
    for key in ("epochs", "batch_size", "hidden", "seq_len", "max_chars", "num_layers",
                "embed_dim", "latent_dim", "width"):
        if key in given and given[key] < 1:
            raise UsageError(f"--{key.replace('_', '-')} must be >= 1, got {given[key]}")
    if "lr" in given and not given["lr"] > 0:
        raise UsageError(f"--lr must be > 0, got {given['lr']}")
    if not 0 <= given.get("dropout", 0) < 1:
        raise UsageError(f"--dropout must be in [0, 1), got {given['dropout']}")
    config = _resume_config(given, args.model, args.out) if args.resume else given
    epochs = given.get("epochs", config.get("epochs", TASKS[args.model].DEFAULTS["epochs"]))
    config["epochs"] = epochs
    if not args.resume and os.path.exists(os.path.join(args.out, "checkpoint.pt")):
        print(f"note: starting over; {args.out}/checkpoint.pt will be replaced (use --resume to "
              "continue it)", file=sys.stderr)
    print(f"gpudnn: training {args.model} on {device} with backend "
          f"{_backend_label(args.backend, device)}; output in {args.out}", flush=True)
    task = _make_task(args.model, config, device, flavor)
    try:
        fit(task, epochs, args.out, resume=args.resume, progress=args.progress)
    except KeyboardInterrupt:
        print(f"\ninterrupted; the last finished epoch is saved in {args.out}; continue with "
              f"the same command plus --resume", file=sys.stderr)
        return 130
    return 0


def _load_for_sampling(args: argparse.Namespace):
    from .models.training import CHECKPOINT_NAME, load_checkpoint, restore
    out = args.out or os.path.join("runs", args.model)
    path = args.checkpoint or os.path.join(out, CHECKPOINT_NAME)
    payload = load_checkpoint(path, args.model)
    device = _device(args.device)
    flavor = _select_backend(args.backend, device)
    task = _make_task(args.model, payload["config"], device, flavor, with_data=False)
    restore(task, payload, path)
    os.makedirs(out, exist_ok=True)
    return task, out


def cmd_sample(args: argparse.Namespace) -> int:
    task, out = _load_for_sampling(args)
    if args.model == "lstm":
        if args.length < 0:
            raise UsageError(f"--length must be >= 0, got {args.length}")
        if args.temperature < 0:
            raise UsageError(f"--temperature must be >= 0, got {args.temperature}")
        try:
            text = task.sample_text(args.prompt, args.length, args.temperature, args.seed)
        except ValueError as exc:  # characters outside the vocabulary
            raise UsageError(f"--prompt: {exc}") from None
        path = os.path.join(out, "sample.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        print(text)
        print(f"\n(written to {path})", file=sys.stderr)
    else:
        if args.count < 1:
            raise UsageError(f"--count must be >= 1, got {args.count}")
        images = task.generate(args.count, args.seed)
        path = os.path.join(out, "samples.png")
        gdata.write_png(path, gdata.image_grid(images))
        print(path)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .models.training import TASKS, fit
    device = _device(args.device)
    flavor = _select_backend(args.backend, device)
    out = args.out or tempfile.mkdtemp(prefix="gpudnn-demo-")
    print(f"gpudnn demo: short runs of the CNN, LSTM and GAN on {device} with backend "
          f"{_backend_label(args.backend, device)}; outputs in {out}\n", flush=True)
    results = {}
    start_all = time.perf_counter()
    for name in ("cnn", "lstm", "gan"):
        cls = TASKS[name]
        config = dict(cls.DEMO)
        print(f"== {name} ==", flush=True)
        start = time.perf_counter()
        task = _make_task(name, config, device, flavor)
        history = fit(task, task.config["epochs"], os.path.join(out, name),
                      progress=args.progress)
        results[name] = (history[-1], time.perf_counter() - start)
        print(flush=True)

    cnn, cnn_s = results["cnn"]
    lstm, lstm_s = results["lstm"]
    gan, gan_s = results["gan"]
    print("== what you should see ==")
    print(f"CNN on scikit-learn's 8x8 digits: test accuracy {100 * cnn['test_acc']:.1f}% after "
          f"{cnn['epoch']} epochs ({cnn_s:.0f} s; >= 95% expected)")
    print(f"LSTM on Python stdlib source: validation loss {lstm['val_loss']:.2f} nats/char after "
          f"{lstm['epoch']} epochs ({lstm_s:.0f} s); a sample:")
    print("    " + lstm["sample"].replace("\n", "\n    "))
    print(f"GAN on upscaled digits: d_loss {gan['d_loss']:.3f}, g_loss {gan['g_loss']:.3f} "
          f"after {gan['epoch']} epochs ({gan_s:.0f} s); sample grid: {gan['grid']}")
    print(f"total {time.perf_counter() - start_all:.0f} s")
    return 0


def _load_compressible(args: argparse.Namespace):
    """(task, checkpoint payload, checkpoint path, device) for quantize / prune."""
    from .models import compress
    device = _device(args.device)
    flavor = _select_backend(args.backend, device)
    if flavor == "torch":
        raise UsageError(f"{args.command} runs gpudnn's layers; --backend torch does not apply")
    path = args.checkpoint or compress.default_checkpoint(args.out)
    try:
        task, payload = compress.load_task(
            path, device, lambda name, config, dev: _make_task(name, config, dev, flavor))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return task, payload, path, device


def _kb(n: int) -> str:
    return f"{n / 1000:.1f} kB"


def _report(metric_name: str, before: float, after: float, sizes_before: tuple[int, int],
            sizes_after: tuple[int, int], written: str) -> None:
    print(f"  {metric_name}: {100 * before:.2f}% -> {100 * after:.2f}% "
          f"({100 * (after - before):+.2f} points)")
    print(f"  size on disk (torch.save of the state_dict): {_kb(sizes_before[0])} -> "
          f"{_kb(sizes_after[0])} ({sizes_after[0] / sizes_before[0]:.2f}x); gzip -9: "
          f"{_kb(sizes_before[1])} -> {_kb(sizes_after[1])} "
          f"({sizes_after[1] / sizes_before[1]:.2f}x)")
    print(f"  written: {written}")


def cmd_quantize(args: argparse.Namespace) -> int:
    from .models import compress
    task, payload, path, device = _load_compressible(args)
    part = "the discriminator" if task.name == "gan" else "the model"
    print(f"gpudnn: quantize {task.name} from {path} (epoch {payload['epoch']}): {part}'s "
          f"Linear/Conv2d weights to {args.dtype}, {args.granularity} scales, weight-only; "
          f"backend {_backend_label(args.backend, device)} on {device}", flush=True)
    metric = compress.Metric(task)
    before, sizes_before = metric(), compress.state_bytes(compress.target(task))
    compress.quantize_task(task, args.dtype, args.granularity)
    after, sizes_after = metric(), compress.state_bytes(compress.target(task))
    os.makedirs(args.out, exist_ok=True)
    written = os.path.join(args.out, compress.QUANTIZED_NAME)
    compress.save_quantized(written, task, args.dtype, args.granularity,
                            {"before": before, "after": after, "bytes_before": sizes_before,
                             "bytes_after": sizes_after})
    _report(metric.name, before, after, sizes_before, sizes_after, written)
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    from .models import compress
    from . import pruning
    if args.fine_tune_epochs < 0:
        raise UsageError(f"--fine-tune-epochs must be >= 0, got {args.fine_tune_epochs}")
    task, payload, path, device = _load_compressible(args)
    module = compress.target(task)
    try:
        layers, skipped = pruning.prunable_layers(module, args.method)
        pruning._check_amount(args.amount, args.method)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    part = "the discriminator" if task.name == "gan" else "the model"
    print(f"gpudnn: prune {task.name} from {path} (epoch {payload['epoch']}): {args.method}, "
          f"amount {args.amount:g} of {part}'s Linear/Conv2d weights, then "
          f"{args.fine_tune_epochs} fine-tune epoch(s); backend "
          f"{_backend_label(args.backend, device)} on {device}", flush=True)
    for name, why in skipped.items():
        print(f"  left dense: {name} ({why})")
    metric = compress.Metric(task)
    before, sizes_before = metric(), compress.state_bytes(module)
    pruning.prune(module, args.amount, args.method, layers=layers)
    after_pruning = metric()
    print(f"  {metric.name} right after pruning: {100 * after_pruning:.2f}%")
    compress.fine_tune(task, args.fine_tune_epochs, payload["epoch"] + 1, args.progress)
    pruning.remove(module)
    after, sizes_after = metric(), compress.state_bytes(module)
    print(f"  {compress.sparsity_line(module)}")
    os.makedirs(args.out, exist_ok=True)
    written = os.path.join(args.out, compress.PRUNED_NAME)
    compress.save_pruned(written, task, payload["epoch"] + args.fine_tune_epochs,
                         list(payload["history"]))
    _report(metric.name, before, after, sizes_before, sizes_after, written)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from .models.training import CheckpointError, single_threaded_blas
    args = build_parser().parse_args(argv)
    handlers = {"train": cmd_train, "sample": cmd_sample, "demo": cmd_demo,
                "quantize": cmd_quantize, "prune": cmd_prune}
    try:
        with single_threaded_blas():  # only NumPy (the reference backend) uses BLAS threads
            return handlers[args.command](args)
    except (UsageError, CheckpointError) as exc:
        print(f"gpudnn: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
