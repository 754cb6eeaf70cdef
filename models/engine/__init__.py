"""What every family's engine shares: loading weights into pipelines, the engine contract
and its per-request state, and the go_fast (compiled, fp8) copy of the denoiser."""
