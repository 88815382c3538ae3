"""karma.data"""
