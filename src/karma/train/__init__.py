"""karma.train"""
