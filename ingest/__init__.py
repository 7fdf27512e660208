"""Ingestion: load files into the typed `Document`, OCR where needed, chunk, embed, index."""
