"""Test doubles: small synthetic datasets and a toy serving encoder, for tests and benchmarks.

Nothing in the rest of `karma` imports this package (an import-linter contract checks it), and
the toy encoder is never registered with the serving registry unless a test calls
`register_toy_encoder()`.
"""
