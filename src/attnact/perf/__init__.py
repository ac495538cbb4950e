"""Performance measurement: side-by-side ratios, never absolute times (a shared machine's load
moves an absolute time; it hits both sides of an interleaved ratio alike)."""
