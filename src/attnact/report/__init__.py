"""Reports: statistics over seeds, tables (markdown, CSV, LaTeX) and figures."""
