"""selfpatch.train"""
