"""curate: data curation and selection for language-model training data."""

__version__ = "0.1.0"

from curate.dataset import Dataset

__all__ = ["Dataset", "__version__"]
