"""Plain model code: no `cog` import anywhere below this package."""
