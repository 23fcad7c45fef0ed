"""lmpipe's library. Folders follow the data flow and imports point back along it:
text -> ngram | neural -> evaluation -> tracking -> cli (stages/ call in from outside);
config.py (the params schema), files.py, errors.py and validation.py (pydantic's complaints as
one line) serve them all. tests/test_layout.py enforces it; docs/internals.md describes each module."""
