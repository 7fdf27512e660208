"""Boxes that sit on one visual row: OCR phrases of a table row, words of a text line.

OCR returns phrases and PDFs return words in no reliable order; statements, receipts, MRZ lines
and OCR'd pages all need them as rows, top to bottom and left to right. `group_rows` is the one
row grouping; its options say what "the same row" means for each use.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, TypeVar

from docteller.model import BBox

T = TypeVar("T")


def _centre(box: BBox) -> float:
    return (box.y0 + box.y1) / 2


def group_rows(
    items: Sequence[T],
    *,
    box: Callable[[T], BBox] = lambda item: item.bbox,  # type: ignore[attr-defined]
    tolerance: float = 0.5,
    anchor: Literal["first", "mean", "row"] = "first",
    height: Literal["smaller", "own"] = "smaller",
    fits: Callable[[list[T], T], bool] | None = None,
    presorted: bool = False,
) -> list[list[T]]:
    """Items in rows (each left to right), rows top to bottom.

    An item joins the current row when its vertical centre is within `tolerance` × a height of
    the row's centre. `anchor` is what the row's centre is: its first item's ("first", for
    lines of similar height), the running mean of its items' ("mean", for words), or that of
    the box around the row so far ("row", for fragments merged into one line). `height` is the
    smaller of the item's and the anchor's ("smaller") or the item's own ("own"). `fits(row,
    item)` may refuse an item for other reasons (overlapping boxes are never one row).
    `presorted` keeps the given order instead of sorting by centre.
    """
    order = list(items) if presorted else sorted(items, key=lambda i: (_centre(box(i)), box(i).x0))
    rows: list[list[T]] = []
    centre = 0.0
    row_box: BBox | None = None
    for item in order:
        b = box(item)
        if rows and row_box is not None:
            ref = box(rows[-1][0]) if anchor == "first" else row_box
            ref_centre = centre if anchor == "mean" else _centre(ref)
            h = b.height if height == "own" else min(ref.height, b.height)
            if abs(_centre(b) - ref_centre) <= tolerance * max(h, 1.0) and (fits is None or fits(rows[-1], item)):
                rows[-1].append(item)
                centre += (_centre(b) - centre) / len(rows[-1])
                row_box = row_box.union(b)
                continue
        rows.append([item])
        centre, row_box = _centre(b), b
    return [sorted(row, key=lambda i: box(i).x0) for row in rows]


def row_box(items: Sequence[T], box: Callable[[T], BBox] = lambda item: item.bbox) -> BBox:  # type: ignore[attr-defined]
    """The box around a row's items."""
    out = box(items[0])
    for item in items[1:]:
        out = out.union(box(item))
    return out
