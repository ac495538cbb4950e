"""Performance measurement: side-by-side ratios, never absolute times (DESIGN.md)."""
