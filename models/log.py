"""One logger for the model code, and one filter for the libraries' noise.

The Cog adapter sends the `models` logger to stdout, which coglet records as the
prediction's logs. Messages libraries print that tell a user nothing are dropped by
quiet_library_noise(), installed when the model code is first imported
(models/__init__.py), before any of those libraries is: each is named below, with why it
is noise. Everything else they print is kept.
"""

import logging

log = logging.getLogger("models")

# Logger name -> fragments of the messages dropped from it, and why they are noise.
_NOISE: dict[str, tuple[str, ...]] = {
    # torchao registers its enums with torch the old way, which torch deprecates on every
    # import; nothing for a user of torchao to change.
    "torch.utils._pytree": ("is an Enum subclass and is now natively supported",),
    # diffusers cannot register torchao's classes for unpickling torchao checkpoints; we
    # quantize at load time and never unpickle any.
    "diffusers.quantizers.torchao.torchao_quantizer": ("Unable to import `torchao` Tensor",),
    # transformers falls back to the PIL image processors, which are the ones we use:
    # the image has no torchvision, on purpose.
    "transformers.utils.import_utils": ("requires torchvision (not installed); falling back",),
    # diffusers' quantizer registry imports bitsandbytes (train.py's adamw8bit needs it);
    # its optional CPU 4-bit kernel is nothing we run.
    "bitsandbytes.backends.cpu.ops": ("Failed to load CPU gemm_4bit_forward",),
    # peft imports torchao's layers for LoRA on torchao weights, and torchao's int8 matmul
    # kernels then say triton is missing (on a machine without it); we run no int8 matmul.
    "torchao.kernel.intmm": ("Detected no triton",),
    # diffusers warns of "modules that should be kept in float32: []" on every cast of a
    # model to a dtype (from_pipe, the SDXL VAE's upcast), even when the list is empty.
    "diffusers.models.modeling_utils": ("should be kept in float32: []",),
}
# Dropped only on a machine without CUDA: torchao's CUDA kernels cannot load there (fp8
# there is weight-only or off anyway). On a GPU the same message is a real problem.
_NOISE_WITHOUT_CUDA: dict[str, tuple[str, ...]] = {"torchao": ("Failed to load",)}


class _Drop(logging.Filter):
    def __init__(self, fragments: tuple[str, ...], only_without_cuda: bool = False):
        super().__init__()
        self.fragments, self.only_without_cuda = fragments, only_without_cuda

    def filter(self, record: logging.LogRecord) -> bool:
        if not any(fragment in record.getMessage() for fragment in self.fragments):
            return True
        if self.only_without_cuda:
            import torch  # imported by then: torchao logs only once torch is loaded

            return torch.cuda.is_available()
        return False


def quiet_library_noise() -> None:
    """Install the filters above (once)."""
    for tables, without_cuda in ((_NOISE, False), (_NOISE_WITHOUT_CUDA, True)):
        for name, fragments in tables.items():
            logger = logging.getLogger(name)
            if not any(isinstance(f, _Drop) for f in logger.filters):
                logger.addFilter(_Drop(fragments, only_without_cuda=without_cuda))


def no_progress_bars() -> None:
    """Loading and saving models draws tqdm bars, which would fill the setup logs (and a
    first run's build of the tiny models) with \r-updated lines; progress is logged."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


def to_stdout() -> None:
    """Send the model code's log to stdout, which coglet records as the job's logs."""
    import sys

    if not log.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    quiet_library_noise()
