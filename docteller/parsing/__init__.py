"""Parsing shared by ingest, retrieval and the agent: money, dates, text, visual rows.

One module per kind of value, in the bottom layer so every layer above can import it:

- `money`: amounts as `Decimal` (statement cells with CR/DR and brackets, plain figures)
- `dates`: the month table, printed and statement dates, dates named in a question
- `text`: folding, whitespace clean-up, stopwords and stemming for term matching
- `rows`: boxes that sit on one visual row (OCR phrases, words), in reading order
"""
