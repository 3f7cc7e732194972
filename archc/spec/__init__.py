"""Spec front end: safe YAML loading, the schema and the expression language."""
