"""peftlab: parameter-efficient fine-tuning of Vision Transformers, as composable Hydra experiments."""

__version__ = "0.1.0"
