"""Pieces shared by the experiment configs: the full field set and the paper's network families.

Every config is an ``ml_collections.ConfigDict`` with the official field names. `base_config` holds every
field any part of the code reads, so each experiment file only states what differs; the network helpers
set the values common to one family (NCSN++/DDPM++, DDPM, NCSN/NCSNv2) and take the ones that vary
between experiments as arguments, so those stay visible in the experiment file.
"""

import ml_collections


def base_config() -> ml_collections.ConfigDict:
    """All fields, with the values of the official CIFAR-10 defaults."""
    config = ml_collections.ConfigDict()
    config.seed = 42

    config.training = training = ml_collections.ConfigDict()
    training.batch_size = 128
    training.n_iters = 1300001
    training.snapshot_freq = 50000
    training.log_freq = 50
    training.eval_freq = 100
    training.snapshot_freq_for_preemption = 10000  # extra checkpoints that a preempted run resumes from
    training.snapshot_sampling = True  # sample a grid at each snapshot
    training.sde = "vesde"
    training.continuous = True
    training.likelihood_weighting = False
    training.reduce_mean = False
    training.n_jitted_steps = 5
    # Activation checkpointing: 'none'; 'blocks' (each residual / attention block recomputed in the backward
    # pass but its convolutions' outputs); 'full' (each block recomputed from its input). Same results, less memory.
    training.remat = "none"
    # Class-conditional networks (config.model.num_classes > 0): the probability that a training label is
    # replaced by the null label, which trains the unconditional score for classifier-free guidance.
    training.label_dropout = 0.1
    # EDM's loss (config.model.formulation = 'edm'): ln sigma ~ N(P_mean, P_std^2).
    training.P_mean = -1.2
    training.P_std = 1.2

    config.sampling = sampling = ml_collections.ConfigDict()
    sampling.method = "pc"
    sampling.predictor = "reverse_diffusion"
    sampling.corrector = "langevin"
    sampling.n_steps_each = 1
    sampling.noise_removal = True
    sampling.probability_flow = False
    sampling.snr = 0.16
    # For sampling.method = 'ode' (the probability-flow ODE): the solver, RK45 (adaptive, with tolerances
    # rtol and atol, as the paper) or a fixed-step one ('euler', 'heun') with ode_steps steps.
    sampling.ode_method = "RK45"
    sampling.rtol = 1e-5
    sampling.atol = 1e-5
    sampling.ode_steps = None
    # Any registered sampler by name (sampling.method: "ddim", "edm:heun", "ipndm", "adaptive_sde", ...; see
    # score_sde/sampling/) on a time grid: `schedule` ("auto": the sampler's published grid, uniform for PC and
    # the paper's ODE solvers, logsnr for DPM-Solver(++) and UniPC, karras for EDM's and iPNDM, quadratic for
    # DDIM; or uniform, logsnr, karras, quadratic) with `steps` intervals, or as many as a budget of `nfe`
    # network evaluations allows. Its options are read from the entries of the same names; None keeps the
    # sampler's default.
    sampling.nfe = None
    sampling.steps = None
    sampling.schedule = "auto"
    sampling.eta = None  # ddim: 0 deterministic, 1 DDPM's ancestral noise
    sampling.s_churn = None  # edm:euler, edm:heun: stochastic churn (S_churn, S_tmin, S_tmax, S_noise)
    sampling.s_tmin = None
    sampling.s_tmax = None
    sampling.s_noise = None
    sampling.order = None  # ipndm, ipndm_v: 1-4
    sampling.abstol = None  # adaptive_sde: its tolerances
    sampling.reltol = None

    config.eval = evaluate = ml_collections.ConfigDict()
    evaluate.begin_ckpt = 9
    evaluate.end_ckpt = 26
    evaluate.batch_size = 1024
    evaluate.enable_sampling = False
    evaluate.num_samples = 50000
    evaluate.enable_loss = True
    evaluate.enable_bpd = False
    evaluate.bpd_dataset = "test"
    evaluate.bpd_num_repeats = 1  # passes over bpd_dataset, fresh dequantisation noise and probes each

    config.data = data = ml_collections.ConfigDict()
    data.dataset = "CIFAR10"
    data.path = ""  # image folder or .npz file, for the 'folder' and 'npz' datasets (MNIST: optional local copy)
    data.tfds_data_dir = None  # tensorflow-datasets' data_dir (None: $TFDS_DATA_DIR or ~/tensorflow_datasets)
    data.image_size = 32
    data.num_channels = 3
    data.centered = False  # True: pixels in [-1, 1]; False: [0, 1]
    data.random_flip = True
    data.uniform_dequantization = False

    config.model = model = ml_collections.ConfigDict()
    model.name = "ncsnpp"
    model.dtype = "float32"  # compute dtype ('float32' or 'bfloat16'); parameters stay float32
    model.sigma_min = 0.01
    model.sigma_max = 50.0
    model.num_scales = 1000
    model.beta_min = 0.1
    model.beta_max = 20.0
    model.dropout = 0.1
    model.embedding_type = "fourier"
    model.ema_rate = 0.999
    # False: the EMA decays at ema_rate from the first step (the official JAX code); True: at
    # min(ema_rate, (1 + n) / (10 + n)) at step n, as the official PyTorch port.
    model.ema_warmup = False
    model.scale_by_sigma = True
    model.conditional = True  # noise-level conditioning (the time embedding)
    model.num_classes = 0  # > 0: a class-conditional network, with a null label for the unconditional score
    # 'paper': the network's output is the score as the paper parameterises it, trained with its losses;
    # 'edm': EDM's preconditioned denoiser for data of std sigma_data, trained with EDM's loss (any SDE).
    model.formulation = "paper"
    model.sigma_data = 0.5

    config.optim = optim = ml_collections.ConfigDict()
    optim.optimizer = "Adam"
    optim.lr = 2e-4
    optim.beta1 = 0.9
    optim.eps = 1e-8
    optim.weight_decay = 0.0
    optim.warmup = 5000  # steps of linear learning-rate warm-up
    optim.grad_clip = 1.0  # global-norm clipping; negative disables it
    return config


def ncsnpp(
    config, *, ch_mult=(1, 2, 2, 2), num_res_blocks=4, fir=True, progressive="none", progressive_input="residual"
):
    """NCSN++ (``fir=True``) or DDPM++ (``fir=False, progressive_input='none'``)."""
    model = config.model
    model.name = "ncsnpp"
    model.normalization = "GroupNorm"
    model.nonlinearity = "swish"
    model.nf = 128
    model.ch_mult = tuple(ch_mult)
    model.num_res_blocks = num_res_blocks
    model.attn_resolutions = (16,)
    model.resamp_with_conv = True
    model.fir = fir
    model.fir_kernel = [1, 3, 3, 1]
    model.skip_rescale = True
    model.resblock_type = "biggan"
    model.progressive = progressive
    model.progressive_input = progressive_input
    model.progressive_combine = "sum"
    model.attention_type = "ddpm"
    model.init_scale = 0.0
    model.fourier_scale = 16
    model.conv_size = 3
    return config


def ddpm(config, *, ch_mult=(1, 2, 2, 2)):
    """The DDPM network of Ho et al. (2020)."""
    model = config.model
    model.name = "ddpm"
    model.normalization = "GroupNorm"
    model.nonlinearity = "swish"
    model.nf = 128
    model.ch_mult = tuple(ch_mult)
    model.num_res_blocks = 2
    model.attn_resolutions = (16,)
    model.resamp_with_conv = True
    model.conv_size = 3
    return config


def ncsn(config, *, name, lr):
    """NCSN (Song & Ermon, 2019) or NCSNv2 (2020): RefineNet with InstanceNorm++, Adam without warm-up or
    clipping, annealed Langevin dynamics sampling."""
    model = config.model
    model.name = name
    model.normalization = "InstanceNorm++"
    model.nonlinearity = "elu"
    model.nf = 128
    model.interpolation = "bilinear"
    config.training.sde = "vesde"
    config.training.continuous = False
    config.sampling.method = "pc"
    config.sampling.predictor = "none"
    config.sampling.corrector = "ald"
    config.optim.lr = lr
    config.optim.warmup = 0
    config.optim.grad_clip = -1.0
    return config


def sampler(config, *, predictor, corrector):
    config.sampling.method = "pc"
    config.sampling.predictor = predictor
    config.sampling.corrector = corrector
    return config


def edm(config, *, sampling_nfe=35):
    """EDM's formulation (Karras et al. 2022): the preconditioned denoiser and its loss, EDM's own SDE
    (sigma(t) = t from sigma_min 0.002 to sigma_max 80), sampled with its Heun sampler on the Karras grid
    (35 network evaluations: 17 Heun steps and, with sampling.noise_removal, EDM's last step to sigma = 0).
    Data in [-1, 1] (sigma_data 0.5)."""
    config.model.formulation = "edm"
    config.model.sigma_data = 0.5
    config.model.scale_by_sigma = False  # c_out scales the output
    config.model.sigma_min = 0.002
    config.model.sigma_max = 80.0
    config.training.sde = "edmsde"
    config.training.continuous = True
    config.training.P_mean = -1.2
    config.training.P_std = 1.2
    config.data.centered = True
    sampling = config.sampling
    sampling.method = "edm:heun"
    sampling.schedule = "karras"
    sampling.nfe = sampling_nfe
    return config


def edm_cifar10(config, *, arch: str, num_classes: int):
    """EDM's CIFAR-10 training (its Table 7 and train.py): ``arch`` 'ddpmpp' (its VP network: DDPM++ with
    positional embeddings) or 'ncsnpp' (its VE network: FIR resampling, residual input pyramid, Fourier
    embeddings), 128 channels x (2, 2, 2), 4 blocks per resolution, dropout 0.13; batch 512 for 200 Mimg,
    Adam at lr 1e-3 ramped up over 10 Mimg, no clipping, EMA half-life 0.5 Mimg. Not reproduced here: EDM's
    non-leaking augmentation pipeline (its CIFAR-10 runs use probability 0.12), hence no flips either."""
    if arch == "ddpmpp":
        config = ncsnpp(config, ch_mult=(2, 2, 2), num_res_blocks=4, fir=False, progressive_input="none")
        config.model.embedding_type = "positional"
    elif arch == "ncsnpp":
        config = ncsnpp(config, ch_mult=(2, 2, 2), num_res_blocks=4, fir=True, progressive_input="residual")
        config.model.embedding_type = "fourier"
    else:
        raise ValueError(f"arch must be 'ddpmpp' or 'ncsnpp', got {arch!r}")
    config = edm(config)
    config.model.num_classes = num_classes
    config.model.dropout = 0.13
    config.model.ema_rate = 0.5 ** (512 / 500_000)  # a half-life of 0.5 Mimg at batch 512: 0.99929
    training = config.training
    training.batch_size = 512
    training.n_iters = 200_000_000 // 512  # 200 Mimg
    training.snapshot_freq = 25_000
    training.reduce_mean = False
    training.label_dropout = 0.1
    config.optim.lr = 1e-3
    config.optim.warmup = 10_000_000 // 512  # 10 Mimg
    config.optim.grad_clip = -1.0
    config.data.random_flip = False
    return config
