"""The one frozen configuration of a training run.

Entry points resolve flags into a `TrainConfig`; library code reads only this
object, never absl FLAGS. Defaults are NR-GAN's (the code BNCR-GAN builds on,
paper section 7.1): Adam 2e-4, betas (0, 0.99), D batch 64, G batch 128,
one D step per G step, EMA 0.999, 200k iterations, R1 weight 10, DS 0.02.
"""

import dataclasses
import json

from bncr_tf.errors import UserError


def _f(default, help_text, lower=None, choices=None):
    """A dataclass field carrying its flag help text and constraints."""
    return dataclasses.field(default=default, metadata={
        "help": help_text, "lower": lower, "choices": choices})


# Fields whose default changed after they were added: the value that a
# config.json written before they existed meant. q_min: session 4 (issue
# 14) moved G_q's range from [0, 100] to [20, 100].
LEGACY_VALUES = {"q_min": 0.0}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Every setting of a run; field metadata holds help and bounds."""

    # Data.
    data: str = _f("builtin:skimage_patches",
                   "Training images: tfds:<name>[:<split>], a folder, the "
                   "builder's TFRecord dir, builtin:skimage_patches or "
                   "fashion_mnist:<split> (docs/data.md).")
    setting: str = _f("A", "Degradation applied to the clean data when it "
                      "is loaded (A = none; see docs/settings.md). Use A "
                      "for data that is already degraded.")
    data_limit: int = _f(0, "Use at most this many images (0 = all).",
                         lower=0)
    resolution: int = _f(32, "Image size in pixels (power of two >= 16).",
                         lower=16)
    data_seed: int = _f(0, "Seed of the static degradation of the data.")
    clean_reference: str = _f("", "Degradation calibration: clean images "
                              "of the same domain (a data spec, disjoint "
                              "from --data) replace G_x, so only G_k, G_n, "
                              "G_q and D train ('' = off).")
    clean_reference_limit: int = _f(0, "Use at most this many reference "
                                    "images (0 = all).", lower=0)
    clean_reference_seed: int = _f(1, "Seed of the reference source (e.g. "
                                   "which patches builtin sources cut).")

    # Model.
    variant: str = _f("bncrgan", "Model variant (bncr_tf.variants), or a "
                      "restoration model: unir or cyclegan "
                      "(docs/restoration.md), deblurgan or "
                      "deblurganv2 (docs/deblurgan.md).")
    degradation_from: str = _f("", "unir: a BNCR-GAN family run directory "
                               "whose frozen EMA G_k, G_n, G_q (with masks "
                               "and psi^g) are the measurement F "
                               "(BNCR-GAN+UNIR); '' = the true degradation "
                               "of --ambient_setting or --setting "
                               "(UNIR-dagger).")
    pairs_from: str = _f("", "deblurgan, deblurganv2: a `degrade` "
                         "SavedModel export (<run>/export/degrade or one "
                         "version of it) that blurs the sharp --data into "
                         "training pairs; '' = the true degradation of "
                         "--ambient_setting or --setting, or "
                         "--degradation_from (docs/deblurgan.md).")
    measurement_weight: float = _f(2.0, "unir: weight of the measurement "
                                   "reconstruction loss ||F(G(y_hat), "
                                   "theta) - y_hat||^2 (UNIR: 2).",
                                   lower=0.0)
    cycle_weight: float = _f(10.0, "cyclegan: weight of the L1 cycle "
                             "losses |F(G(y)) - y| and |G(F(x)) - x| "
                             "(CycleGAN: 10).", lower=0.0)
    identity_weight: float = _f(0.5, "cyclegan: identity losses |G(x) - x| "
                                "and |F(y) - y|, weighted this times "
                                "--cycle_weight (CycleGAN: 0.5; 0 = off).",
                                lower=0.0)
    pool_size: int = _f(50, "cyclegan: earlier fakes each D sees from an "
                        "image pool (CycleGAN: 50; 0 = off).", lower=0)
    width: int = _f(128, "Channels of G_x, G_n and D (128 = NR-GAN).",
                    lower=1)
    residual_factor: float = _f(0.1, "Scale of the residual branch of "
                                "every ResNet block of G_x and D (0.1 = "
                                "NR-GAN; [choice] for short runs, "
                                "docs/results.md).", lower=0.0)
    z_dim: int = _f(128, "Size of each latent z_x, z_k, z_n, z_q.",
                    lower=1)
    kernel_size: int = _f(0, "Blur kernel size K of G_k (odd); 0 = 7 below "
                          "128 px and 11 from 128 px.", lower=0)
    noise_prior: str = _f("", "Override the variant's G_n prior: "
                          "additive_gaussian, multiplicative_gaussian, "
                          "poisson, camera or none ('' keeps the variant's).")
    ambient_setting: str = _f("", "True degradation simulated by "
                              "AmbientGAN ('' = --setting).")
    rounding: str = _f("ste", "Rounding of the differentiable JPEG: ste, "
                       "cubic, sin or none.",
                       choices=("ste", "cubic", "sin", "none"))
    jpeg_storage: bool = _f(False, "Compressed fakes model libjpeg's 8-bit "
                            "storage like the reals: psi^g rounds its "
                            "samples to 8 bits (straight-through) and its "
                            "output is dequantised as the data are "
                            "([choice], docs/results.md).")
    quality_gradient: str = _f("analytic", "How psi^g differentiates the "
                               "JPEG quality q: analytic (through the "
                               "rounding rule) or fd (central finite "
                               "difference over +-5, [choice], "
                               "docs/results.md).",
                               choices=("analytic", "fd"))
    d_highpass: float = _f(0.0, "0 = NR-GAN's D; s > 0 also feeds D s times "
                           "a fixed 3x3 high-pass of its input, which "
                           "exposes JPEG artefacts ([choice], "
                           "docs/results.md; 20 in Experiment 1).",
                           lower=0.0)
    d_block_grid: float = _f(0.0, "0 = NR-GAN's D; s > 0 also feeds D s "
                             "times the luma jumps on and off the 8x8 JPEG "
                             "block grid, which a convolutional D cannot "
                             "locate by itself ([choice], docs/results.md, "
                             "Experiment 3).", lower=0.0)

    fake_storage: bool = _f(False, "Every fake is stored as the reals "
                            "are: rounded to 8 bits (straight-through) and "
                            "dequantised with U(0, 1/128) ([choice], "
                            "docs/results.md).")
    centre_kernels: bool = _f(False, "G_k's kernels are moved so that "
                              "their centroid is the centre tap (a shifted "
                              "kernel only translates the image; [choice], "
                              "docs/results.md).")
    q_min: float = _f(20.0, "Lower end of G_q's quality range: q = q_min "
                      "+ (100 - q_min) sigmoid(.) (0 = the paper's [0, 100],"
                      " where psi^g has no q-gradient below 2 and little "
                      "below 20; [choice], docs/results.md).", lower=0.0)

    # Losses.
    r1_weight: float = _f(10.0, "R1 weight (NR-GAN convention, no 1/2).",
                          lower=0.0)
    r1_inputs: str = _f("all", "R1's input gradient: all (through every "
                        "input of D, the paper's R1) or image (through the "
                        "image channels only; D's high-pass and block-grid "
                        "maps are then constants in R1's pass) [choice].",
                        choices=("all", "image"))
    ds_weight: float = _f(0.02, "Diversity-sensitive weight for G_k, G_n "
                          "and G_q.", lower=0.0)
    ds_weight_kernel: float = _f(-1.0, "Diversity-sensitive weight of G_k "
                                 "(< 0 = --ds_weight).")
    ds_weight_quality: float = _f(-1.0, "Diversity-sensitive weight of G_q "
                                  "(< 0 = --ds_weight).")
    ds_noise_target: str = _f("noise", "What the diversity-sensitive loss "
                              "of G_n compares: noise (n, with eps, as "
                              "NR-GAN), std (the noise std map, without "
                              "eps) or log_std (its logarithm); all "
                              "three raised the noise on clean data "
                              "(docs/results.md, Experiment 3).",
                              choices=("noise", "std", "log_std"))
    ac_weight: float = _f(1.0, "Weight of the adaptive consistency losses.",
                          lower=0.0)
    ac_reduction: str = _f("mean", "L_AC's squared error: sum (the squared "
                           "norm of paper eqs. 7-8) or mean (over pixels).",
                           choices=("sum", "mean"))
    mu_k: float = _f(-1.0, "AC blur scale mu_k (< 0 = library default).")
    mu_q: float = _f(-1.0, "AC compression scale mu_q (< 0 = library "
                     "default).")

    # Optimisation.
    degradation_lr_scale: float = _f(1.0, "Learning rate of G_k, G_n and "
                                     "G_q as a multiple of --lr (their own "
                                     "Adam when != 1; [choice], "
                                     "docs/results.md).", lower=0.0)
    d_lr_scale: float = _f(1.0, "Learning rate of D as a multiple of --lr "
                           "(the two time-scale rule of Heusel et al. 2017 "
                           "when > 1; [choice], docs/results.md).",
                           lower=0.0)
    degradation_warmup: int = _f(0, "Iterations at the start during which "
                                 "G_k, G_n and G_q do not update (G_x and D "
                                 "learn first; [choice], docs/results.md).",
                                 lower=0)
    init_from: str = _f("", "A run directory whose newest valid checkpoint "
                        "initialises G_x (raw and EMA) and D of a new run; "
                        "G_k, G_n, G_q, the optimisers and the step start "
                        "fresh ('' = random initialisation; a diagnostic "
                        "of docs/results.md, Experiment 3).")
    iterations: int = _f(200_000, "Training iterations (one D and one G "
                         "step each).", lower=1)
    lr: float = _f(2e-4, "Adam learning rate of all networks (unir: 1e-4 "
                   "unless given; docs/restoration.md).", lower=0.0)
    beta1: float = _f(0.0, "Adam beta1.", lower=0.0)
    beta2: float = _f(0.99, "Adam beta2.", lower=0.0)
    d_batch: int = _f(64, "Global D batch (real and fake images).",
                      lower=2)
    g_batch: int = _f(128, "Global G batch (even).", lower=2)
    ema_decay: float = _f(0.999, "EMA decay of the generators (0 = off).",
                          lower=0.0)
    seed: int = _f(0, "Seed of initialisation, latents and data order.")

    # Infrastructure.
    outdir: str = _f("runs", "Parent directory of the numbered run "
                     "directories.")
    run_name: str = _f("", "Run name ('' = <variant>-<setting>-<res>px).")
    resume: str = _f("auto", "auto: continue the newest run of this name "
                     "that has a checkpoint; none: start a new run; or a "
                     "run directory to continue.")
    log_every: int = _f(100, "Iterations per status line and TensorBoard "
                        "scalars.", lower=1)
    grid_every: int = _f(5000, "Iterations per image grid.", lower=1)
    checkpoint_every: int = _f(5000, "Iterations per checkpoint.", lower=1)
    keep_checkpoints: int = _f(5, "Checkpoints kept on disk.", lower=1)
    export_at_end: bool = _f(True, "Export SavedModels when training ends.")
    mixed_precision: str = _f("none", "none, mixed_float16 (GPU, with loss "
                              "scaling) or mixed_bfloat16.",
                              choices=("none", "mixed_float16",
                                       "mixed_bfloat16"))
    jit_compile: bool = _f(False, "Compile the training steps with XLA.")
    distribute: str = _f("auto", "auto (mirrored on >1 GPU, else default), "
                         "default, mirrored, or multiworker (TF_CONFIG).",
                         choices=("auto", "default", "mirrored",
                                  "multiworker"))
    deterministic: bool = _f(False, "Enable TensorFlow op determinism.")
    grid_size: int = _f(8, "Samples per side of the image grids.", lower=1)
    fid_every: int = _f(0, "Iterations between FID evaluations of the EMA "
                        "G_x during training (0 = off); the best checkpoint "
                        "is kept in checkpoints/best.", lower=0)
    fid_samples: int = _f(10_000, "Generated images per FID evaluation.",
                          lower=2)
    fid_reference: str = _f("", "Clean reference data for FID ('' = the "
                            "run's own data, read clean).")
    fid_extractor: str = _f("inception", "Feature network of FID: "
                            "inception (TTUR, comparable), "
                            "keras_inception_v3 (not comparable), "
                            "random_conv (tests only) or classifier "
                            "(Fashion-MNIST classifier features, not "
                            "comparable; needs --classifier_path).",
                            choices=("inception", "keras_inception_v3",
                                     "random_conv", "classifier"))
    inception_path: str = _f("", "TTUR Inception graph (.pb/.tgz); '' = "
                             "$BNCR_INCEPTION_PATH, the cache, or download.")
    classifier_path: str = _f("", "classifier.keras (or its directory) of "
                              "tools/train_fmnist_classifier.py for "
                              "--fid_extractor=classifier.")
    dry_run: bool = _f(False, "Print the resolved config and stop.")

    def resolved_kernel_size(self):
        if self.kernel_size:
            return self.kernel_size
        return 7 if self.resolution < 128 else 11

    def default_run_name(self):
        return self.run_name or (
            f"{self.variant}-{self.setting}-{self.resolution}px")

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def complete(cls, values):
        """A stored config dict with the fields it predates filled in.

        A field missing from a config.json written before the field
        existed gets the value that reproduces the behaviour of that time:
        `LEGACY_VALUES` where the default has changed since, else the
        default.
        """
        out = {f.name: LEGACY_VALUES.get(f.name, f.default)
               for f in dataclasses.fields(cls)}
        out.update(values)
        return out

    @classmethod
    def from_dict(cls, values):
        """Builds a config from a dict, rejecting unknown keys; missing
        keys are filled in by `complete`."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise UserError(f"unknown config keys: {', '.join(unknown)}")
        return cls(**cls.complete(values))

    def validate(self):
        """Checks every field's choices and lower bound (as the flags do),
        then cross-field constraints; raises UserError with a sentence."""
        for field in dataclasses.fields(self):
            value, meta = getattr(self, field.name), field.metadata
            if meta.get("choices") and value not in meta["choices"]:
                raise UserError(
                    f"--{field.name} must be one of "
                    f"{', '.join(map(str, meta['choices']))}, got {value!r}")
            if meta.get("lower") is not None and value < meta["lower"]:
                raise UserError(f"--{field.name} must be >= {meta['lower']},"
                                f" got {value}")
        r = self.resolution
        if r < 16 or r & (r - 1):
            raise UserError(
                f"--resolution must be a power of two >= 16, got {r}")
        if self.d_batch < 2 or self.g_batch < 2:
            raise UserError("--d_batch and --g_batch must be at least 2")
        if self.g_batch % 2:
            raise UserError(
                "--g_batch must be even (the diversity-sensitive loss pairs "
                f"two halves of the batch), got {self.g_batch}")
        k = self.resolved_kernel_size()
        if k % 2 == 0 or k < 3:
            raise UserError(f"--kernel_size must be odd and >= 3, got {k}")
        if k // 2 >= r:
            raise UserError(
                f"--kernel_size {k} is too large for {r} px images")
        if self.mixed_precision not in (
                "none", "mixed_float16", "mixed_bfloat16"):
            raise UserError(
                "--mixed_precision must be none, mixed_float16 or "
                f"mixed_bfloat16, got {self.mixed_precision!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise UserError(
                f"--ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.iterations < 1:
            raise UserError("--iterations must be at least 1")
        if not 0.0 <= self.q_min < 90.0:
            raise UserError(
                f"--q_min must be in [0, 90) (G_q starts at q = 90), got "
                f"{self.q_min}")
        return self

    def validate_all(self):
        """`validate` plus the names of the variant, settings and prior."""
        self.validate()
        from bncr_tf import variants
        from bncr_tf.degradations import settings
        if variants.is_restoration(self.variant):
            return self._validate_restoration()
        if self.degradation_from:
            raise UserError("--degradation_from is for --variant=unir")
        if self.pairs_from:
            raise UserError("--pairs_from is for --variant=deblurgan or "
                            "deblurganv2")
        try:
            variants.get_variant(self.variant)
            for name in (self.setting, self.ambient_setting):
                if name:
                    settings.get_setting(name)
        except ValueError as e:
            raise UserError(str(e)) from None
        if self.clean_reference:
            v = variants.get_variant(self.variant)
            if not (v.has_generator_stage or v.name == "p_ambientgan"):
                raise UserError(
                    f"--clean_reference trains only the degradation "
                    f"generators, but --variant={self.variant} has none")
        if self.noise_prior and self.noise_prior not in variants.NOISE_PRIORS:
            raise UserError(
                f"--noise_prior must be one of "
                f"{', '.join(variants.NOISE_PRIORS)}, got {self.noise_prior!r}")
        return self

    def _validate_restoration(self):
        """Cross-field checks of a restoration model (--variant=unir,
        deblurgan, deblurganv2)."""
        from bncr_tf import variants
        from bncr_tf.degradations import settings
        try:
            for name in (self.setting, self.ambient_setting):
                if name:
                    settings.get_setting(name)
        except ValueError as e:
            raise UserError(str(e)) from None
        for name in ("clean_reference", "init_from"):
            if getattr(self, name):
                raise UserError(f"--{name} is not available for "
                                f"--variant={self.variant}")
        if self.fid_every:
            raise UserError(
                f"--fid_every is not available for --variant="
                f"{self.variant}; score a restoration run with python -m "
                f"bncr_tf.evaluate --run_dir=... (docs/restoration.md)")
        if self.mixed_precision != "none":
            raise UserError(f"--variant={self.variant} trains in float32 "
                            f"only (--mixed_precision=none)")
        paired = variants.is_paired(self.variant)
        if self.pairs_from and not paired:
            raise UserError("--pairs_from is for --variant=deblurgan or "
                            "deblurganv2")
        if self.pairs_from and self.degradation_from:
            raise UserError("give one of --pairs_from and "
                            "--degradation_from")
        if self.variant == "cyclegan":
            return self._validate_cyclegan()
        if not (self.degradation_from or self.pairs_from):
            true = settings.get_setting(self.ambient_setting or self.setting)
            if true.is_clean and paired:
                raise UserError(
                    f"--variant={self.variant} needs a way to blur the "
                    f"sharp --data into pairs: a degraded --setting (or "
                    f"--ambient_setting), --pairs_from=<degrade export> or "
                    f"--degradation_from=<BNCR-GAN run dir>; setting "
                    f"{true.name} is clean")
            if true.is_clean:
                raise UserError(
                    f"--variant={self.variant} needs a measurement F: the "
                    f"true degradation of a degraded --setting (or "
                    f"--ambient_setting), or --degradation_from=<BNCR-GAN "
                    f"run dir>; setting {true.name} is clean")
        return self

    def _validate_cyclegan(self):
        """CycleGAN needs a setting with clean and degraded images."""
        from bncr_tf import variants
        from bncr_tf.degradations import settings
        for name in ("degradation_from", "ambient_setting"):
            if getattr(self, name):
                raise UserError(f"--{name} is not available for "
                                f"--variant=cyclegan (it learns F from the "
                                f"clean and degraded sets)")
        reason = variants.no_clean_reason(settings.get_setting(self.setting))
        if reason:
            raise UserError(
                f"--variant=cyclegan needs clean and degraded training "
                f"images (set-level supervision); {reason} (the paper "
                f"leaves CycleGAN out of setting N; use O, P or Q)")
        return self
