"""karma.diagnostics"""
