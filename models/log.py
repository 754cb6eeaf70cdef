"""One logger for the model code. The Cog adapter sends it to stdout, which
coglet records as the prediction's logs."""

import logging

log = logging.getLogger("models")


def to_stdout() -> None:
    """Send the model code's log to stdout, which coglet records as the job's logs."""
    import sys

    if not log.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    quiet_import_noise()


def quiet_import_noise() -> None:
    """Warnings libraries print while importing that tell a user nothing: on a machine
    without the GPUs they are built for, torchao's CUDA kernels fail to load (fp8 there
    is weight-only or off anyway), torch deprecates how torchao registers its enums, and
    diffusers cannot register torchao classes for unpickling torchao checkpoints (we
    quantize at load time and never unpickle any)."""
    import torch

    if not torch.cuda.is_available():
        logging.getLogger("torchao").setLevel(logging.ERROR)
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
    logging.getLogger("diffusers.quantizers.torchao.torchao_quantizer").setLevel(logging.ERROR)
