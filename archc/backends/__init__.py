"""Backends turn a compiled spec into something: a torch module, source code, a diagram."""
