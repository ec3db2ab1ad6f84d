"""Programs that run inside the training and serving images (never imports `launcher`)."""

__version__ = "0.1.0"
