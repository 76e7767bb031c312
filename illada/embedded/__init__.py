"""The embedded default model: a small masked diffusion LM trained by this project (see train.py)."""
