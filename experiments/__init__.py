"""The `wm` command line, presets, end-to-end pipelines, benchmarks and reports."""
