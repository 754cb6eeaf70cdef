"""The mini world (flat shapes on flat backgrounds), the judge that reads pictures of it
back, and the trainers that make the mini models (script/train-mini)."""
