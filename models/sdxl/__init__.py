"""SDXL with its refiner: the plan (inputs into a job), schedulers, the engine (diffusers
pipelines) and the model a predictor serves."""
