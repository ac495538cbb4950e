"""Paper experiments and comparisons: grids of training runs and the reports they make."""
