"""Evaluation of extraction against the shared corpus ground truth (ids, statements, forms).

Used by `docteller eval extraction` and `benchmarks/bench_extraction.py`. Every figure is
computed here from the corpus' JSONL files; nothing is hard-coded.
"""

from __future__ import annotations

import difflib
import json
import logging
import re
import statistics
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

from docteller.check_labels import CheckName
from docteller.model import ExtractionResult

if TYPE_CHECKING:  # passporteye (a benchmark baseline) is imported only when it is compared
    from passporteye.mrz.text import MRZ

log = logging.getLogger(__name__)

MRZ_FIELDS = ("document_type", "issuing_country", "surname", "given_names", "document_number", "nationality", "date_of_birth", "sex", "expiry_date")


@dataclass
class CategoryReport:
    name: str
    metrics: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)  # wall-clock, per item
    cpu_seconds: list[float] = field(default_factory=list)  # this process's CPU time, per item

    @property
    def seconds_each(self) -> float:
        return sum(self.seconds) / len(self.seconds) if self.seconds else 0.0

    def timing(self) -> str:
        """Wall p50/max and mean process CPU per item: a loaded machine stretches wall time."""
        if not self.seconds:
            return ""
        ordered = sorted(self.seconds)
        cpu = sum(self.cpu_seconds) / len(self.cpu_seconds) if self.cpu_seconds else 0.0
        return f"p50={statistics.median(ordered):.2f} max={ordered[-1]:.2f} cpu={cpu:.2f}"


class _Timer:
    """Wall and process CPU time of one item, appended to a report's lists on exit."""

    def __init__(self, report: CategoryReport, per: int = 1) -> None:
        self.report, self.per = report, per

    def __enter__(self) -> _Timer:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        per = max(self.per, 1)
        self.report.seconds.append((time.perf_counter() - self.wall) / per)
        self.report.cpu_seconds.append((time.process_time() - self.cpu) / per)


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _norm(text: str | None) -> str:
    return re.sub(r"[^A-Z0-9]", "", (text or "").upper())


def _mrz_field_matches(name: str, expected: str, got: str | None) -> bool:
    if got is None:
        return False
    if name in ("date_of_birth", "expiry_date"):
        return got.replace("-", "")[2:] == expected  # GT is YYMMDD
    if name == "document_type":
        return _norm(got) == _norm(expected)
    return _norm(got) == _norm(expected)


def evaluate_mrz_text(corpus: Path) -> CategoryReport:
    """cheminfo MRZ text cases: the valid/invalid verdict and the parsed fields."""
    from ingest.extract.mrz import parse_mrz

    report = CategoryReport("mrz_text")
    cases = _jsonl(corpus / "ids" / "mrz_text_cases" / "cheminfo_mrz_cases.jsonl")
    verdict_ok = supported = 0
    for case in cases:
        reading = parse_mrz(case["mrz_lines"])
        valid = bool(reading and reading.valid)
        supported += reading is not None
        if valid == case["valid"]:
            verdict_ok += 1
        else:
            report.notes.append(f"{case['case']}: expected {'valid' if case['valid'] else 'invalid'}, got {'valid' if valid else 'invalid' if reading else 'unsupported format'}")
    report.metrics = {"cases": len(cases), "verdict_accuracy": verdict_ok / len(cases), "formats_supported": supported / len(cases)}
    return report


def evaluate_ids(corpus: Path, *, limit: int | None = None, compare_passporteye: bool = True, preprocess: bool = False, engine: str = "rapidocr") -> tuple[CategoryReport, CategoryReport | None]:
    """ID images: our MRZ vs passporteye.read_mrz, check-digit validity and field accuracy."""
    from ingest.extract import extract
    from ingest.ocr import warm_up

    records = _id_records(corpus, limit)
    warm_up(engine)
    ours = CategoryReport("ids" + ("_preprocessed" if preprocess else "") + ("" if engine == "rapidocr" else f"_{engine}"))
    theirs = CategoryReport("ids_passporteye") if compare_passporteye else None
    our_tally, their_tally = _IdTally(), _IdTally()
    printed = {"pass": 0, "fail": 0, "not read": 0}
    for rec in records:
        path = corpus / "ids" / rec["file"]
        with _Timer(ours):
            try:
                res = extract(path, "auto", preprocess=preprocess, engine=engine)
            except Exception as exc:  # an unreadable specimen is a failure, not a crash of the eval
                ours.notes.append(f"{rec['file']}: {exc}")
                res = None
        _tally_ours(rec, res, our_tally, printed, ours.notes)
        if theirs is not None:
            _tally_passporteye(rec, _read_passporteye(path, rec["file"], theirs), their_tally)
    ours.metrics = our_tally.metrics(len(records))
    ours.metrics.update({f"printed_vs_mrz_{k.replace(' ', '_')}": v for k, v in printed.items()})
    if theirs is not None:
        theirs.metrics = their_tally.metrics(len(records))
    return ours, theirs


def _id_records(corpus: Path, limit: int | None) -> list[dict]:
    """The MRZ documents of the ID ground truth, those with field ground truth first (so a
    limited run still measures accuracy), at most `limit` of them."""
    records = [r for r in _jsonl(corpus / "ids" / "ids_groundtruth.jsonl") if r["kind"] == "mrz_document"]
    records.sort(key=lambda r: not r["fields"])
    return records[:limit] if limit else records


@dataclass
class _IdTally:
    """One reader's running counts over the ID images."""

    valid: int = 0  # images whose check digits all validate
    gt_images: int = 0  # images with MRZ field ground truth
    fields: int = 0  # ground-truth fields compared…
    field_ok: int = 0  # …and read right
    gt_all: int = 0  # ground-truth images with every field right

    def add_fields(self, gt: dict, values: dict[str, str | None], file: str, notes: list[str] | None = None) -> None:
        """Compare one image's MRZ fields with its ground truth; each miss goes to `notes`, if given."""
        self.gt_images += 1
        ok_all = True
        for name in MRZ_FIELDS:
            if name not in gt:
                continue
            self.fields += 1
            got = values.get(name)
            if _mrz_field_matches(name, gt[name], got):
                self.field_ok += 1
            else:
                ok_all = False
                if notes is not None:
                    notes.append(f"{file}: {name} expected {gt[name]!r} got {got!r}")
        self.gt_all += ok_all

    def metrics(self, images: int) -> dict:
        return _id_metrics(images, self.valid, self.gt_images, self.field_ok, self.fields, self.gt_all)


def _has_mrz_truth(rec: dict) -> bool:
    return bool(rec["fields"] and rec["fields"].get("mrz_type"))


def _tally_ours(rec: dict, res: ExtractionResult | None, tally: _IdTally, printed: dict[str, int], notes: list[str]) -> None:
    """Score our reading of one image: its check digits, printed-vs-MRZ checks and fields."""
    checks = list(res.checks.items()) if res else []
    digit_checks = [c.ok for n, c in checks if n.startswith("check_digit")]
    if digit_checks and all(digit_checks):
        tally.valid += 1
    for name, check in checks:
        if name.startswith("visual_"):
            # Every corpus image is a consistent specimen: a printed-vs-MRZ failure here is a
            # misread printed value, i.e. a false alarm a customer would see.
            printed[check.status.value] += 1
            if check.ok is False:
                notes.append(f"{rec['file']}: {check.label}: {check.detail}")
    if _has_mrz_truth(rec):
        values = {name: res.value(name) for name in MRZ_FIELDS} if res else {}
        tally.add_fields(rec["fields"], values, rec["file"], notes)


def _read_passporteye(path: Path, file: str, report: CategoryReport) -> MRZ | None:
    """passporteye's MRZ of one image (timed into `report`), or None when it finds none."""
    with _Timer(report):
        try:
            from passporteye import read_mrz

            return read_mrz(str(path))
        except Exception as exc:  # passporteye raises on some inputs; count as a miss
            report.notes.append(f"{file}: {exc}")
            return None


def _tally_passporteye(rec: dict, mrz: MRZ | None, tally: _IdTally) -> None:
    """Score passporteye's reading of one image by the same criteria as ours."""
    if mrz is not None:
        # Same criterion as ours: every check digit validates (passporteye's `valid`
        # also demands its own line-length heuristics, which would understate it).
        flags = [v for k, v in mrz.to_dict().items() if k.startswith("valid_") and k != "valid_score"]
        tally.valid += bool(flags) and all(flags)
    if _has_mrz_truth(rec):
        tally.add_fields(rec["fields"], _passporteye_values(mrz.to_dict() if mrz is not None else {}), rec["file"])


def _passporteye_values(d: dict) -> dict[str, str | None]:
    """passporteye's fields under our names (its dates are YYMMDD: compared as `xx` + YYMMDD)."""
    return {
        "document_type": d.get("type", "").replace("<", ""),
        "issuing_country": d.get("country"),
        "surname": d.get("surname"),
        "given_names": d.get("names"),
        "document_number": (d.get("number") or "").replace("<", ""),
        "nationality": d.get("nationality"),
        "date_of_birth": "xx" + d["date_of_birth"] if d.get("date_of_birth") else None,
        "sex": d.get("sex"),
        "expiry_date": "xx" + d["expiration_date"] if d.get("expiration_date") else None,
    }


def _id_metrics(images: int, all_valid: int, gt_images: int, field_ok: int, fields: int, gt_all: int) -> dict:
    """One reader's ID scores: check-digit validity over all images, field accuracy over GT ones."""
    return {
        "images": images,
        "check_digits_all_valid": all_valid / images if images else 0.0,
        "gt_images": gt_images,
        "field_exact": field_ok / fields if fields else 0.0,
        "gt_images_all_fields": gt_all / gt_images if gt_images else 0.0,
    }


def _tx_key(date: str | None, amount) -> tuple[str | None, Decimal]:
    return date, Decimal(str(amount)).quantize(Decimal("0.01"))


def evaluate_statements(corpus: Path) -> dict[str, CategoryReport]:
    """Transactions recall/precision (matched on date + signed amount) and reconciliation."""
    from ingest.extract import extract

    reports = {k: CategoryReport(f"statements_{k}") for k in ("text", "scanned")}
    counts = {k: {"tp": 0, "gt": 0, "pred": 0, "recon": 0, "docs": 0, "header_ok": 0, "header_n": 0, "currency_ok": 0, "currency_n": 0} for k in reports}
    for rec in _jsonl(corpus / "statements" / "statements_groundtruth.jsonl"):
        gt = rec["fields"]
        if not gt.get("transactions"):
            continue
        kind = "scanned" if "scanned" in rec["file"] else "text"
        with _Timer(reports[kind]) as timer:  # per page: statements run to several pages
            res = extract(corpus / "statements" / rec["file"], "statement")
            timer.per = res.pages
        c = counts[kind]
        expected = [_tx_key(t["date"], t["amount"]) for t in gt["transactions"]]
        got = [_tx_key(t.date, t.amount) for t in res.transactions]
        remaining = list(got)
        tp = 0
        for key in expected:
            if key in remaining:
                remaining.remove(key)
                tp += 1
        c["tp"] += tp
        c["gt"] += len(expected)
        c["pred"] += len(got)
        c["docs"] += 1
        check = res.checks.get(CheckName.balance_reconciles)
        c["recon"] += bool(check and check.ok)
        for name, gt_name in (("opening_balance", "opening_balance"), ("closing_balance", "closing_balance")):
            if gt_name in gt:
                c["header_n"] += 1
                c["header_ok"] += res.value(name) is not None and Decimal(res.value(name)) == Decimal(str(gt[gt_name]))
        if gt.get("currency"):
            c["currency_n"] += 1
            c["currency_ok"] += res.value("currency") == gt["currency"]
        if tp < len(expected):
            reports[kind].notes.append(f"{rec['file']}: {tp}/{len(expected)} transactions matched, {len(got)} read")
    for kind, c in counts.items():
        reports[kind].metrics = {
            "docs": c["docs"],
            "tx_recall": c["tp"] / c["gt"] if c["gt"] else 0.0,
            "tx_precision": c["tp"] / c["pred"] if c["pred"] else 0.0,
            "reconciliation_pass": c["recon"] / c["docs"] if c["docs"] else 0.0,
            "balances_exact": c["header_ok"] / c["header_n"] if c["header_n"] else 0.0,
            "currency_right": f"{c['currency_ok']}/{c['currency_n']}",
        }
    return reports


def evaluate_receipts(corpus: Path, *, limit: int | None = None) -> CategoryReport:
    from ingest.extract import extract
    from ingest.extract.visual import parse_printed_date

    report = CategoryReport("receipts_sroie")
    records = [r for r in _jsonl(corpus / "forms" / "forms_groundtruth.jsonl") if r["kind"] == "receipt"][: limit or None]
    per_field = {k: 0 for k in ("company", "date", "address", "total")}
    address_close = 0  # character similarity >= 0.9: OCR slips in long addresses, reported apart
    for rec in records:
        with _Timer(report):
            res = extract(corpus / "forms" / rec["file"], "receipt")
        gt = rec["fields"]
        for name in per_field:
            got = res.value(name)
            want = gt.get(name)
            if name == "date":
                ok = got is not None and got == parse_printed_date(want or "")
            elif name == "total":
                ok = got is not None and want is not None and _norm(got) == _norm(want)
            else:
                ok = _norm(got) == _norm(want)
            per_field[name] += ok
            if name == "address" and got and want:
                address_close += difflib.SequenceMatcher(None, _norm(got), _norm(want)).ratio() >= 0.9
            if not ok:
                report.notes.append(f"{rec['file']}: {name} expected {want!r} got {got!r}")
    n = len(records)
    report.metrics = {
        "receipts": n,
        **{f"{k}_acc": v / n for k, v in per_field.items()},
        "four_field_acc": sum(per_field.values()) / (4 * n) if n else 0.0,
        "address_similar_0.9": address_close / n if n else 0.0,
    }
    return report


def evaluate_forms(corpus: Path, *, limit: int | None = None) -> CategoryReport:
    """FUNSD: fraction of ground-truth question->answer links whose answer we pair with the question."""
    from ingest.extract import extract

    report = CategoryReport("forms_funsd")
    records = [r for r in _jsonl(corpus / "forms" / "forms_groundtruth.jsonl") if r["kind"] == "form"][: limit or None]
    hits = total = predicted = correct_pred = 0
    for rec in records:
        with _Timer(report):
            res = extract(corpus / "forms" / rec["file"], "form")
        got = {_norm(k): _norm(f.value) for k, f in res.fields.items()}
        predicted += sum(1 for v in got.values() if v)
        for question, answer in rec["fields"].items():
            if not answer:
                continue
            total += 1
            q = _norm(question)
            a = _norm(answer.split(" | ")[0])
            match = next((v for k, v in got.items() if k and (k == q or k in q or q in k)), None)
            if match and a and (a in match or match in a):
                hits += 1
                correct_pred += 1
    report.metrics = {"forms": len(records), "qa_recall": hits / total if total else 0.0, "qa_precision": correct_pred / predicted if predicted else 0.0}
    return report


def run_all(
    corpus: Path,
    *,
    id_limit: int | None = None,
    receipt_limit: int | None = None,
    form_limit: int | None = None,
    passporteye: bool = True,
    id_variants: bool = False,
) -> list[CategoryReport]:
    from ingest.ocr import warm_up

    warm_up()  # model loading is paid once per process, not by the first document timed
    reports: list[CategoryReport] = [evaluate_mrz_text(corpus)]
    ours, theirs = evaluate_ids(corpus, limit=id_limit, compare_passporteye=passporteye)
    reports.append(ours)
    if theirs is not None:
        reports.append(theirs)
    if id_variants:
        # The same images with grayscale/contrast preprocessing, and with Tesseract instead.
        reports.append(evaluate_ids(corpus, limit=id_limit, compare_passporteye=False, preprocess=True)[0])
        from ingest.ocr import tesseract_available

        if tesseract_available():
            reports.append(evaluate_ids(corpus, limit=id_limit, compare_passporteye=False, engine="tesseract")[0])
    reports.extend(evaluate_statements(corpus).values())
    reports.append(evaluate_receipts(corpus, limit=receipt_limit))
    reports.append(evaluate_forms(corpus, limit=form_limit))
    return reports


def render(reports: list[CategoryReport]) -> str:
    lines = [f"{'category':<22} {'s/item':>7}  {'wall p50, max; mean cpu s':<26}  metrics"]
    for r in reports:
        metrics = ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.metrics.items())
        lines.append(f"{r.name:<22} {r.seconds_each:>7.2f}  {r.timing():<26}  {metrics}")
    return "\n".join(lines)
