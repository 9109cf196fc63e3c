"""A real llama.cpp peer for the tests: a tiny random GGUF and xllamacpp's server."""
