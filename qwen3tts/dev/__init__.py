"""Developer tools: random-weight models in the official layout (tests, benchmarks)."""
