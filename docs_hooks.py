"""mkdocs hook (mkdocs.yml `hooks:`): drops the test-collector words from ```python fences for the site.

tests/test_docs_examples.py reads words after the language of a fence (```` ```python notest ````,
```` ```python backend=jax ````); GitHub ignores them, but the site's Markdown (pymdownx.superfences) would not
recognise such a fence as code. This hook keeps only the language.
"""

import re

_FENCE_WORDS = re.compile(r"^([ \t]*(?:`{3,}|~{3,})[ \t]*(?:python|py))[ \t]+[^`{\n]+$", re.MULTILINE)


def on_page_markdown(markdown, **kwargs):
    return _FENCE_WORDS.sub(r"\1", markdown)
