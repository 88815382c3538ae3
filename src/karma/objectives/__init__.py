"""karma.objectives"""
