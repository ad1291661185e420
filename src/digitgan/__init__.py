"""digitgan: generative adversarial networks for small images."""

__version__ = "0.1.0"
