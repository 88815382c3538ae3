"""karma.model"""
