"""The tools around the core: the notebook runner, batches, reports (the core never imports
them)."""

import sys

# nbformat (under papermill and nbconvert) imports jsonschema, whose format checkers import
# rfc3987_syntax when it is installed (jupyter-events pulls it in); that import compiles 39 lark
# grammars, 2.7 CPU-s in every process that touches a notebook: each `make run`, each batch
# unit, each report. No schema these tools validate uses the IRI formats it checks, so it is
# kept out: a None entry makes its import the ImportError jsonschema already handles.
sys.modules.setdefault("rfc3987_syntax", None)
