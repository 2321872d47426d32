"""Captures shipped out of the process to storage a team already runs (any fsspec URL).

:mod:`~autoprof.sink.layout` says where everything lives in a sink; the uploader sends each
finished capture there from a background thread.
"""
