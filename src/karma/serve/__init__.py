"""karma.serve"""
