"""`script/bench`: where time and memory go, printed as JSON (never asserted as timings)."""
