"""Settings of the heart-failure classifier, one frozen object per profile.

The paper's recipe (method step 7 of the brief): ResNet-18 with ImageNet weights, 224 px,
batch 64, 10 epochs, Adam lr 1e-4, reduce-on-plateau by 2 after 3 epochs, random flips
and Gaussian noise, healthy patients undersampled so HF is 25% of training patients
(10% of validation patients), best epoch by validation balanced accuracy, 8 runs.

`smoke` and `demo` keep that recipe and shrink its sizes so it runs on a laptop CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class ClassifierConfig:
    # input pipeline: every batch is resized to image_size x image_size inside the model
    image_size: int = 224
    batch_size: int = 64
    epochs: int = 10
    lr: float = 1e-4
    # learning rate of the fine-tuning stage of synth_pretrain_real_finetune
    # (RoentGen-v2 fine-tuned at half the pretraining rate)
    finetune_lr: float = 5e-5
    plateau_factor: float = 0.5
    plateau_patience: int = 3
    # augmentation: random horizontal and vertical flips, then additive Gaussian noise
    noise_std: float = 0.05
    # healthy patients undersampled (patient level) so that HF is this share of patients
    hf_train_fraction: float = 0.25
    hf_val_fraction: float = 0.10
    n_seeds: int = 8
    # a local state_dict file of torchvision's ResNet-18 (ImageNet); None: random init
    pretrained_weights: str | None = None
    # DataLoader-style worker threads for reading batches from disk (0: main thread)
    workers: int = 0
    # bootstrap resamples of patients for the confidence intervals
    bootstrap_n: int = 1000
    # synthetic images per cell (36 cells) of strategy real_plus_synth_1x;
    # real_plus_synth_2x, synth_only and the pretraining stage use twice this
    synthetic_per_cell: int = 56  # 36 x 56 ~ the paper's +2000
    # share of *real* images in each batch of real_synth_mix_alpha (Ktena et al.'s alpha),
    # chosen on validation balanced accuracy
    alpha_grid: tuple[float, ...] = (0.25, 0.5, 0.75)
    # torch CPU threads during training (None: leave torch's default)
    torch_threads: int | None = None
    # "cpu", "cuda", ... (None: cuda when available)
    device: str | None = None
    # autocast dtype of the ResNet-18 (weights stay fp32): "auto" is bf16 where the device runs it
    # natively (CUDA; CPUs with Intel AMX, where the demo's runs train 1.8x faster), else fp32
    dtype: str = "auto"

    def __post_init__(self) -> None:
        if not 0.0 < self.hf_train_fraction < 1.0 or not 0.0 < self.hf_val_fraction < 1.0:
            raise ValueError("hf_train_fraction and hf_val_fraction must lie in (0, 1)")
        if self.epochs < 1 or self.batch_size < 2 or self.image_size < 16:
            raise ValueError("need epochs >= 1, batch_size >= 2, image_size >= 16")
        if not self.alpha_grid or not all(0.0 < a <= 1.0 for a in self.alpha_grid):
            raise ValueError("alpha_grid values (share of real images per batch) must lie in (0, 1]")

    def compute_dtype(self):
        """The torch dtype `dtype` resolves to on this machine's device."""
        import torch

        from cardio_assets.compute import resolve_autocast_dtype, resolve_device

        dtype = resolve_autocast_dtype(self.dtype, resolve_device(self.device or "auto"))
        return torch.float32 if dtype == torch.float16 else dtype  # fp16 training would need a gradient scaler

    def with_(self, **changes) -> "ClassifierConfig":
        return replace(self, **changes)

    @classmethod
    def smoke(cls) -> "ClassifierConfig":
        """Seconds per run on 2 CPU cores, 32 px: for tests and CI."""
        return cls(
            image_size=32,
            batch_size=16,
            epochs=2,
            lr=1e-3,
            finetune_lr=5e-4,
            n_seeds=1,
            bootstrap_n=100,
            synthetic_per_cell=2,
            alpha_grid=(0.5,),
        )

    @classmethod
    def demo(cls) -> "ClassifierConfig":
        """64 px, sized for the phantom cohort on a laptop CPU.

        Measured on 2 CPU cores: ResNet-18 at 64 px trains at ~180 images/s (batch 64), so
        one run over ~6,000 training images for 2 epochs takes ~70 s with validation
        (5,652 images: 69 s). When the cores are shared with other busy processes, set
        torch_threads=1: two threads then spin against each other (16 vs 96 images/s).
        A higher lr than the paper's makes up for the few epochs of a randomly initialised
        network.
        """
        return cls(
            image_size=64,
            batch_size=64,
            epochs=2,
            lr=1e-3,
            finetune_lr=5e-4,
            n_seeds=2,  # the 30-minute demo budget; the paper profile runs 8
            bootstrap_n=1000,
            synthetic_per_cell=28,
            alpha_grid=(0.5, 0.75),
        )

    @classmethod
    def paper(cls) -> "ClassifierConfig":
        """The main paper's settings (needs a GPU and local ImageNet weights to match it)."""
        return cls()

    @classmethod
    def for_profile(cls, name: str) -> "ClassifierConfig":
        try:
            return {"smoke": cls.smoke, "demo": cls.demo, "paper": cls.paper}[name]()
        except KeyError:
            raise ValueError(f"unknown profile {name!r}; choose smoke, demo or paper") from None
