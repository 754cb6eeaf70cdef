"""FLUX.1: the plan (inputs into a job), the engine (diffusers pipelines) and the model a
predictor serves."""
