"""Adapter and tooling layer around cog: schema generation, local server helpers."""
