"""LoRA fine-tuning for FLUX and SDXL (train.py is its Cog and command-line shell)."""
