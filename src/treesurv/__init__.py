"""treesurv: the tree-seedling mortality model, from versioned data to a served API."""

__version__ = "0.1.0"
