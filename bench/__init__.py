"""Load benchmark of the full turn over real HTTP, compared with stock botbuilder in one run."""
