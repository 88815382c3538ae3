"""karma.eval"""
