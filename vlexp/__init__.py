"""vlexp: data-efficient vision-language alignment experiments."""

__version__ = "0.1.0"
