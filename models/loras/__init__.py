"""LoRAs: the inputs, the sources they come from, fetching into the disk cache, what a
file holds, the adapters a model keeps loaded, and the slots of the compiled model."""
