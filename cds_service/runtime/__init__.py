"""Process-wide plumbing every layer above the engine may use: the settings registry and log format.
"""
