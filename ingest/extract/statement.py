"""Bank and credit-card statements: header fields, the transactions table, reconciliation.

The table is found from its header row (Date / Description / Debit / Credit / Balance and their
synonyms in several languages); column roles come from the header words' x-positions and hold
for the following pages until a new header appears. Each text row is split into date,
description and amounts by x-position. A transaction ends on a row carrying an amount; rows
without amounts are description continuations (attached to the transaction they belong to, see
`_group_rows`). Amounts are `Decimal` throughout; reconciliation checks the totals
(opening + credits - debits = closing) and the running balance row by row.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from docteller.check_labels import CheckName, field_label
from docteller.model import BBox, ExtractionResult, Field, Page, Transaction, Word, WordRow
from docteller.parsing.dates import parse_date_parts, parse_full_date, uses_day_first
from docteller.parsing.money import is_credit_marked, parse_amount, to_decimal, uses_decimal_comma
from docteller.parsing.text import fold
from docteller.redact import mask

log = logging.getLogger(__name__)

# Header vocabulary (lowercase, accents kept as printed and also folded by the caller).
ROLE_WORDS: dict[str, tuple[str, ...]] = {
    "date": ("date", "datum", "日期", "trans date", "transaction date", "post date", "posting date", "value date", "fecha"),
    "description": ("description", "details", "transaction details", "particulars", "narrative", "transaction", "merchant", "omschrijving", "détails", "libellé", "counterparty", "tegenrekening", "payee", "memo"),
    "debit": ("debit", "debits", "withdrawal", "withdrawals", "paid out", "money out", "debit/withdrawal", "chèques et débits", "débits", "af", "debet", "out"),
    "credit": ("credit", "credits", "deposit", "deposits", "paid in", "money in", "dépôts et crédits", "crédits", "bij", "in"),
    "balance": ("balance", "running balance", "solde", "saldo"),
    "amount": ("amount", "$ amount", "amount (sgd)", "bedrag", "montant", "amount(sgd)"),
}
# The same vocabulary folded (accents off), as header phrases are before they are looked up.
_ROLE_VOCAB = {role: frozenset(fold(w) for w in words) for role, words in ROLE_WORDS.items()}
OPENING_LABELS = ("opening balance", "balance brought forward", "brought forward", "previous balance", "solde d'ouverture", "solde précédent", "beginning balance", "openingsaldo", "begin saldo", "last month's balance", "starting balance")
CLOSING_LABELS = ("closing balance", "balance carried forward", "carried forward", "new balance", "solde de clôture", "nouveau solde", "ending balance", "eindsaldo", "eind saldo", "closing")
SKIP_ROW = re.compile(r"^(sub\s*total|total|totals|page \d|continued|balance (brought|carried) forward|opening balance|closing balance)\b", re.I)

CURRENCY_CODES = ("NZD", "AUD", "USD", "SGD", "EUR", "GBP", "HKD", "CAD", "CHF", "JPY", "INR", "MYR", "CNY", "ZAR")
# Symbols that name one currency on their own; checked longest first ("NZ$" before "$").
CURRENCY_SYMBOLS = (("NZ$", "NZD"), ("AU$", "AUD"), ("A$", "AUD"), ("CA$", "CAD"), ("C$", "CAD"), ("US$", "USD"), ("S$", "SGD"), ("HK$", "HKD"), ("€", "EUR"), ("£", "GBP"), ("₹", "INR"))
# A bare "$" is many currencies: the statement's own country decides. Naming the country is
# good evidence; a phone prefix or the national account-number format only a hint (uncertain).
DOLLAR_COUNTRIES = (
    ("NZD", r"\bNZ\b|New Zealand|Aotearoa", r"\+64\b|\b\d{2}-\d{4}-\d{7}-\d{2,3}\b"),
    ("AUD", r"\bAustralian?\b", r"\+61\b|\bBSB\b"),
    ("CAD", r"\bCanada\b|\bCanadian\b", r"\bQC\b|Québec|\bOntario\b"),
    ("SGD", r"\bSingapore\b", r"\+65\b"),
    ("HKD", r"\bHong Kong\b", r"\+852\b"),
    ("USD", r"United States|\bU\.S\.A?\b|\bUSA\b", r"\brouting (number|no)\b|\b[A-Z]{2} \d{5}(?:-\d{4})?\b"),
)


@dataclass
class Column:
    role: str
    x0: float
    x1: float

    @property
    def centre(self) -> float:
        return (self.x0 + self.x1) / 2


@dataclass
class Row:
    page: int
    line: WordRow
    date: tuple[int, int, int | None] | None  # (day, month, year or None)
    date_text: str
    description: str
    amounts: dict[str, Decimal]  # role -> value (debit/credit/amount/balance)
    bbox: BBox
    confidence: float


@dataclass
class StatementTable:
    rows: list[Row] = field(default_factory=list)
    columns: list[Column] = field(default_factory=list)
    pages: set[int] = field(default_factory=set)


# --- Dates in rows ---------------------------------------------------------------------------


def _leading_date(words: list[Word], day_first: bool, x_limit: float) -> tuple[tuple[int, int, int | None], int, str] | None:
    """A date made of the first 1-3 words left of x_limit: (date, words used, text)."""
    for n in (3, 2, 1):
        if len(words) < n or words[n - 1].bbox.x0 > x_limit:
            continue
        text = " ".join(w.text for w in words[:n])
        parsed = parse_date_parts(text, day_first)
        if parsed:
            return parsed, n, text
    return None


# --- Table structure ---------------------------------------------------------------------------


def _header_columns(line: WordRow) -> list[Column] | None:
    """Column roles from a header row, or None if the row is not a table header."""
    words = line.words
    columns: list[Column] = []
    used = [False] * len(words)
    # Multi-word labels first ("Transaction details", "Paid out").
    for n in (4, 3, 2, 1):
        for i in range(len(words) - n + 1):
            if any(used[i : i + n]):
                continue
            phrase = fold(" ".join(w.text for w in words[i : i + n])).strip(" :")
            phrase = re.sub(r"\s*\(.*?\)|\s*\$$|\s*\(-\)|\s*\(\+\)", "", phrase).strip()
            for role, vocab in _ROLE_VOCAB.items():
                if phrase in vocab:
                    columns.append(Column(role, words[i].bbox.x0, words[i + n - 1].bbox.x1))
                    for k in range(i, i + n):
                        used[k] = True
                    break
    roles = {c.role for c in columns}
    money_roles = roles & {"debit", "credit", "amount", "balance"}
    if "date" not in roles and "description" not in roles:
        return None
    if not money_roles or len(roles) < 3 and not ({"date", "description"} <= roles and money_roles):
        return None
    # Tokens like "$" after a label widen that column.
    columns.sort(key=lambda c: c.x0)
    merged: list[Column] = []
    for c in columns:
        if merged and merged[-1].role == c.role:
            merged[-1].x1 = max(merged[-1].x1, c.x1)
        else:
            merged.append(c)
    if sum(not used[i] and len(w.text) > 3 and w.text.isalpha() for i, w in enumerate(words)) > len(merged):
        return None  # a sentence that happens to contain "date" and "balance"
    return merged


@dataclass
class _Layout:
    columns: list[Column]
    day_first: bool
    decimal_comma: bool

    @property
    def money_columns(self) -> list[Column]:
        return [c for c in self.columns if c.role in ("debit", "credit", "amount", "balance")]

    @property
    def money_start(self) -> float:
        """Left bound of the amounts area: right-aligned amounts end past their header's start."""
        first = min(self.money_columns, key=lambda c: c.x0)
        return first.x0 - 12

    def desc_x(self) -> float:
        for c in self.columns:
            if c.role == "description":
                return c.x0
        return self.money_start

    def money_role(self, word: Word) -> str:
        cols = self.money_columns
        return min(cols, key=lambda c: min(abs(word.xc - c.centre), abs(word.bbox.x1 - c.x1))).role


def _row_from_line(line: WordRow, page: int, layout: _Layout) -> Row:
    words = line.words
    date_hit = _leading_date(words, layout.day_first, layout.desc_x() - 2)
    start = date_hit[1] if date_hit else 0
    amounts: dict[str, Decimal] = {}
    desc_words = []
    for w in words[start:]:
        value = parse_amount(w.text, layout.decimal_comma) if w.bbox.x1 >= layout.money_start else None
        if value is not None:
            role = layout.money_role(w)
            if role != "balance" and layout.columns and any(c.role in ("amount",) for c in layout.columns) and is_credit_marked(w.text):
                value = abs(value)
            amounts[role] = value
            continue
        if w.bbox.x0 >= layout.money_start and w.text in ("CR", "DR", "$", "€"):
            if w.text == "DR" and "balance" in amounts:
                amounts["balance"] = -abs(amounts["balance"])
            continue
        desc_words.append(w.text)
    return Row(
        page=page,
        line=line,
        date=date_hit[0] if date_hit else None,
        date_text=date_hit[2] if date_hit else "",
        description=" ".join(desc_words).strip(),
        amounts=amounts,
        bbox=line.bbox,
        confidence=line.confidence,
    )


def _merge_split_amounts(line: WordRow) -> WordRow:
    """OCR/PDF sometimes splits '1,234.56 CR' or '$ 12.00' into separate words: glue them."""
    out: list[Word] = []
    for w in line.words:
        if out and w.text in ("CR", "DR", "Cr", "Dr") and parse_amount(out[-1].text) is not None:
            prev = out[-1]
            out[-1] = Word(text=prev.text + " " + w.text, bbox=prev.bbox.union(w.bbox), confidence=min(prev.confidence, w.confidence))
            continue
        if out and out[-1].text in ("$", "€", "£", "S$", "-") and re.match(r"^[\d(]", w.text):
            prev = out[-1]
            out[-1] = Word(text=prev.text + w.text, bbox=prev.bbox.union(w.bbox), confidence=min(prev.confidence, w.confidence))
            continue
        out.append(w)
    return WordRow(words=out)


def parse_table(pages: list[Page]) -> tuple[StatementTable, _Layout | None]:
    all_text = "\n".join(p.phrase_text for p in pages)
    decimal_comma = uses_decimal_comma(all_text)
    day_first = uses_day_first(all_text)
    table = StatementTable()
    layout: _Layout | None = None
    running = _running_headers(pages)
    for page in pages:
        for raw_line in page.word_rows():
            if (page.number, round(raw_line.bbox.y0)) in running:
                continue
            line = _merge_split_amounts(raw_line)
            columns = _header_columns(line)
            if columns:
                layout = _Layout(columns, day_first, decimal_comma)
                table.columns = columns
                continue
            if layout is None:
                continue
            if line.bbox.y1 <= 0:
                continue
            row = _row_from_line(line, page.number, layout)
            if not row.description and not row.amounts and not row.date:
                continue
            table.rows.append(row)
            table.pages.add(page.number)
    return table, layout


def _running_headers(pages: list[Page], margin: float = 0.12) -> set[tuple[int, int]]:
    """(page, y) of amount-free lines repeated on 2+ pages in the top/bottom margins."""
    if len(pages) < 2:
        return set()
    seen: dict[str, list[tuple[int, int]]] = {}
    for page in pages:
        for line in page.word_rows():
            yc = (line.bbox.y0 + line.bbox.y1) / 2
            if margin * page.height < yc < (1 - margin) * page.height:
                continue
            if any(parse_amount(w.text) is not None for w in line.words):
                continue
            key = re.sub(r"\d+", "#", line.text.lower())
            seen.setdefault(key, []).append((page.number, round(line.bbox.y0)))
    return {pos for positions in seen.values() if len({p for p, _ in positions}) >= 2 for pos in positions}


def _group_rows(rows: list[Row]) -> list[list[Row]]:
    """Rows -> transactions. A row with an amount closes a transaction.

    Amount-less rows are description lines. They open the next transaction, except that a run
    of undated amount-less rows directly after a transaction, followed by a dated row, are that
    previous transaction's continuation lines (card number, original date, reference).
    """
    groups: list[list[Row]] = []
    pending: list[Row] = []
    for i, row in enumerate(rows):
        has_amount = any(k != "balance" for k in row.amounts) or ("balance" in row.amounts and _is_balance_marker(row))
        if has_amount:
            if row.date is not None and pending and pending[0].date is None and groups:
                groups[-1].extend(pending)
                pending = []
            groups.append(pending + [row])
            pending = []
            continue
        if "balance" in row.amounts and groups:
            # A balance-only row: the running balance of the previous transaction.
            groups[-1].append(row)
            continue
        if row.date is not None and pending and pending[0].date is None and groups:
            groups[-1].extend(pending)
            pending = []
        pending.append(row)
    if pending and groups and pending[0].date is None:
        groups[-1].extend(pending)
    return groups


def _is_balance_marker(row: Row) -> bool:
    return bool(re.search(r"balance|forward|solde|saldo", row.description, re.I))


# --- Header fields -----------------------------------------------------------------------------


def _label_value(pages: list[Page], labels: tuple[str, ...]) -> tuple[str, int, BBox] | None:
    """The text following a label on its row, or the next row's text below the label."""
    for page in pages[:2]:
        lines = page.word_rows()
        for i, line in enumerate(lines):
            low = line.text.lower()
            for label in labels:
                idx = low.find(label)
                if idx < 0:
                    continue
                after = line.text[idx + len(label) :].strip(" :")
                if after:
                    return after, page.number, line.bbox
                # value on its own line right below, near the label's x
                label_x = line.words[0].bbox.x0
                for nxt in lines[i + 1 : i + 3]:
                    if abs(nxt.words[0].bbox.x0 - label_x) < 40 or nxt.words[0].bbox.x0 > label_x:
                        return nxt.text.strip(), page.number, nxt.bbox
    return None


def _phrase_value(pages: list[Page], labels: tuple[str, ...]) -> tuple[str, int, BBox] | None:
    """Label/value pairs laid out as separate phrases (label above value, or label left of value)."""
    for page in pages[:2]:
        phrases = page.phrases
        for i, ph in enumerate(phrases):
            low = ph.text.lower().strip(" :")
            if low not in labels:
                continue
            # value to the right on the same row
            right = [p for p in phrases if p is not ph and abs((p.bbox.y0 + p.bbox.y1) / 2 - (ph.bbox.y0 + ph.bbox.y1) / 2) < ph.bbox.height * 0.6 and p.bbox.x0 > ph.bbox.x1]
            if right:
                best = min(right, key=lambda p: p.bbox.x0)
                return best.text, page.number, best.bbox
            below = [p for p in phrases if p is not ph and 0 < p.bbox.y0 - ph.bbox.y1 < ph.bbox.height * 2.5 and abs(p.bbox.x0 - ph.bbox.x0) < 30]
            if below:
                best = min(below, key=lambda p: p.bbox.y0)
                return best.text, page.number, best.bbox
    return None


def _find(pages: list[Page], labels: tuple[str, ...]) -> tuple[str, int, BBox] | None:
    return _phrase_value(pages, labels) or _label_value(pages, labels)


ACCOUNT_LABELS = ("account number", "account no", "account no.", "acct no", "card number", "iban", "rekeningnummer", "numéro de compte", "no de compte", "account")
PERIOD_LABELS = ("statement period", "period", "periode", "période", "statement date", "for the period")
HOLDER_LABELS = ("account holder", "account name", "name", "customer name", "naam", "nom du titulaire")


def _header_fields(result: ExtractionResult, pages: list[Page], decimal_comma: bool, day_first: bool) -> dict[str, Decimal]:
    first = pages[0]
    balances: dict[str, Decimal] = {}
    text = "\n".join(p.phrase_text for p in pages)
    # Bank name: the first line naming a bank, else the page's first line.
    bank = next((p for p in first.phrases[:12] if re.search(r"\b(bank|banque|banco|credit union|trust|savings)\b", p.text, re.I)), None)
    if bank is None and first.phrases:
        bank = first.phrases[0]
    if bank is not None:
        result.fields["bank_name"] = Field(name="bank_name", value=bank.text.strip(), confidence=round(0.8 * bank.confidence, 4), page=first.number, bbox=bank.bbox, raw=bank.text, source="ocr" if first.ocr_used else "text")
    acct = _find(pages, ACCOUNT_LABELS)
    number = None
    if acct:
        m = re.search(r"[A-Z]{0,2}\d[\d\s*-]{5,}\d", acct[0])
        if m:
            number = m.group(0)
    if number is None:
        m = re.search(r"\b\d{2}-\d{4}-\d{7}-\d{2,3}\b|\b(?:\d{4}[ -]){3}\d{4}\b", text)
        if m:
            number = m.group(0)
            acct = (number, first.number, None)
    if number:
        result.fields["account_number"] = Field(name="account_number", value=mask(number), confidence=0.9, page=acct[1], bbox=acct[2], raw=None, source="text", sensitive=True)
    holder = _find(pages, HOLDER_LABELS)
    holder_value = None
    if holder and re.fullmatch(r"[A-Za-z .,'-]{3,60}", holder[0]) and not re.search(r"account|bank", holder[0], re.I):
        holder_value = holder
    if holder_value is None:
        # Statements print the holder's name as an all-caps address block line near the top.
        for ph in first.phrases[1:15]:
            t = ph.text.strip()
            if re.fullmatch(r"(MR |MRS |MS |DR )?[A-Z][A-Z'-]+(?: [A-Z][A-Z'-]+){1,3}", t) and not re.search(r"BANK|STATEMENT|ACCOUNT|PAGE|TOTAL|CREDIT|CARD", t):
                holder_value = (t, first.number, ph.bbox)
                break
    if holder_value:
        result.fields["account_holder"] = Field(name="account_holder", value=holder_value[0], confidence=0.75, page=holder_value[1], bbox=holder_value[2], source="text")
    period = _find(pages, PERIOD_LABELS)
    period_text = period[0] if period else None
    m = re.search(r"(?:from\s+)?(\d{1,2}\s+[A-Za-zéû]{3,9}\.?\s+\d{4}|\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}|\d{4}-\d{2}-\d{2})\s*(?:to|-|–|au|tot|t/m)\s*(\d{1,2}\s+[A-Za-zéû]{3,9}\.?\s+\d{4}|\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}|\d{4}-\d{2}-\d{2})", period_text or text)
    if m:
        start, end = parse_full_date(m.group(1), day_first), parse_full_date(m.group(2), day_first)
        if start and end:
            result.fields["period_start"] = Field(name="period_start", value=start, confidence=0.9, page=period[1] if period else None, raw=m.group(1), source="text")
            result.fields["period_end"] = Field(name="period_end", value=end, confidence=0.9, page=period[1] if period else None, raw=m.group(2), source="text")
            result.fields["statement_period"] = Field(name="statement_period", value=f"{start}/{end}", confidence=0.9, page=period[1] if period else None, bbox=period[2] if period else None, raw=m.group(0), source="text")
    currency = statement_currency(text)
    if currency is not None:
        code, confidence, evidence = currency
        result.fields["currency"] = Field(name="currency", value=code, confidence=confidence, raw=evidence, source="text" if confidence >= 0.9 else "inferred")
    for key, labels in (("opening_balance", OPENING_LABELS), ("closing_balance", CLOSING_LABELS)):
        hit = _find(pages, labels)
        if hit:
            tokens = hit[0].replace("$", "").split()
            value = None
            for n in (2, 1):
                if len(tokens) >= n:
                    value = parse_amount(" ".join(tokens[:n]).replace("S", ""), decimal_comma) or value
                    if value is not None:
                        break
            if value is not None:
                balances[key] = value
                result.fields[key] = Field(name=key, value=str(value), confidence=0.9, page=hit[1], bbox=hit[2], raw=hit[0], source="text")
    return balances


def statement_currency(text: str) -> tuple[str, float, str] | None:
    """(ISO code, confidence, what it was read from) from the statement's own text, or None.

    A printed code wins (the most frequent, so one foreign-currency line does not decide), then
    a symbol that names one currency; a bare "$" takes the country the statement names (0.8)
    or only hints at (0.6: shown as uncertain). A "$" with no country at all stays unnamed."""
    counts = {c: len(re.findall(rf"\b{c}\b", text)) for c in CURRENCY_CODES}
    code = max(counts, key=lambda c: counts[c])
    if counts[code]:
        return code, 0.95, code
    for symbol, iso in CURRENCY_SYMBOLS:
        if symbol in text:
            return iso, 0.9, symbol
    if "$" not in text:
        return None
    for iso, named, hinted in DOLLAR_COUNTRIES:
        if m := re.search(named, text):
            return iso, 0.8, f"the $ sign and '{m.group(0)}' on the statement"
    for iso, named, hinted in DOLLAR_COUNTRIES:
        if re.search(hinted, text):  # the hint may be an account number: never quoted
            return iso, 0.6, f"the $ sign and a phone or account number format used in {iso[:2]}"
    return None


# --- Assembly ---------------------------------------------------------------------------------


def _is_credit_card(text: str) -> bool:
    return bool(re.search(r"credit card|card statement|minimum (payment|due)|payment due|credit limit", text, re.I))


def _infer_year(pages: list[Page], result: ExtractionResult) -> tuple[int | None, int | None]:
    end = result.value("period_end")
    if end:
        return int(end[:4]), int(end[5:7])
    text = "\n".join(p.phrase_text for p in pages[:2])
    years = re.findall(r"\b(20\d{2})\b", text)
    if years:
        return int(max(set(years), key=years.count)), None
    m = re.search(r"\b\d{1,2}[- ](?:[A-Za-z]{3})[- ](\d{2})\b", text)
    return (2000 + int(m.group(1)), None) if m else (None, None)


def extract_statement(result: ExtractionResult, pages: list[Page]) -> bool:
    """Fill `result` with statement fields, transactions and checks. True if a table was found."""
    text = "\n".join(p.phrase_text for p in pages)
    decimal_comma = uses_decimal_comma(text)
    balances = _header_fields(result, pages, decimal_comma, uses_day_first(text))
    table, layout = parse_table(pages)
    if layout is None:
        result.warnings.append("no transactions table header found (Date / Description / Amount / Balance)")
        return bool(result.fields)
    year, end_month = _infer_year(pages, result)
    reader = _TransactionReader(result, layout, balances, _is_credit_card(text), year, end_month)
    transactions = [t for group in _group_rows(table.rows) if (t := reader.read(group)) is not None]
    _date_leading_rows(transactions)
    result.transactions = _within_closing_balance(transactions, balances)
    result.doc_type = "statement"
    _reconcile(result, balances)
    log.info("statement: %d transactions on %d pages, account %s", len(transactions), len(table.pages), result.value("account_number") or "?")
    return True


_BALANCE_ROW = re.compile(r"^(balance brought forward|opening balance|closing balance|balance carried forward)", re.I)


@dataclass
class _TransactionReader:
    """Turns the table's row groups into transactions, in order: it carries the last date seen
    (rows without one share it) and the last balance (unsigned amounts take their sign from
    the balance's movement)."""

    result: ExtractionResult
    layout: _Layout
    balances: dict[str, Decimal]
    credit_card: bool
    year: int | None
    end_month: int | None
    last_date: tuple[int, int, int | None] | None = None
    prev_balance: Decimal | None = None

    def __post_init__(self) -> None:
        self.prev_balance = self.balances.get("opening_balance")
        self.has_split = any(c.role in ("debit", "credit") for c in self.layout.columns)

    def read(self, group: list[Row]) -> Transaction | None:
        anchor = next((r for r in reversed(group) if any(k != "balance" for k in r.amounts)), group[-1])
        dated = next((r for r in group if r.date), None)
        description = " ".join(r.description for r in group if r.description).strip()
        if _is_balance_marker(anchor) and set(anchor.amounts) <= {"balance"} or _BALANCE_ROW.match(description):
            self._balance_row(anchor, description)
            return None
        if SKIP_ROW.match(description) and not dated:
            return None
        amount = self._signed_amount(group, anchor.amounts)
        if amount is None:
            return None
        balance = next((r.amounts["balance"] for r in reversed(group) if "balance" in r.amounts), None)
        if not self.has_split and not self.credit_card and balance is not None and self.prev_balance is not None and amount > 0:
            # Unsigned amounts in a single column: the balance movement gives the sign.
            if self.prev_balance - amount == balance:
                amount = -amount
        if dated:
            self.last_date = dated.date
        if balance is not None:
            self.prev_balance = balance
        iso = _iso(self.last_date, self.year, self.end_month) if self.last_date else None
        return _transaction(group, iso, description, amount, balance)

    def _balance_row(self, anchor: Row, description: str) -> None:
        """An opening or closing balance printed as a table row (not a transaction)."""
        if "balance" not in anchor.amounts:
            return
        value = anchor.amounts["balance"]
        if re.search(r"opening|brought", description, re.I) and "opening_balance" not in self.balances:
            self.balances["opening_balance"] = self.prev_balance = value
            _balance_row_field(self.result, "opening_balance", anchor)
        elif re.search(r"closing|carried", description, re.I) and "closing_balance" not in self.balances:
            self.balances["closing_balance"] = value
            _balance_row_field(self.result, "closing_balance", anchor)

    def _signed_amount(self, group: list[Row], amounts: dict[str, Decimal]) -> Decimal | None:
        """The transaction's amount, + credit / - debit, or None for a row without one."""
        if self.has_split:
            debit, credit = amounts.get("debit"), amounts.get("credit")
            if debit is None and credit is None:
                return amounts.get("amount")
            return (abs(credit) if credit is not None else Decimal(0)) - (abs(debit) if debit is not None else Decimal(0))
        if "amount" not in amounts:
            return None
        amount = amounts["amount"]
        if self.credit_card:
            # Card statements print purchases plainly and payments/refunds as CR or (x.xx).
            comma = self.layout.decimal_comma
            raw = next((w.text for r in group for w in r.line.words if parse_amount(w.text, comma) in (amount, -amount)), "")
            amount = abs(amount) if is_credit_marked(raw) or amount < 0 else -abs(amount)
        return amount


def _transaction(group: list[Row], iso: str | None, description: str, amount: Decimal, balance: Decimal | None) -> Transaction:
    """A transaction outlined by the box of its rows on its first page."""
    bbox = group[0].bbox
    for r in group[1:]:
        if r.page == group[0].page:
            bbox = bbox.union(r.bbox)
    return Transaction(date=iso, description=description, amount=amount, balance=balance, page=group[0].page,
                       bbox=bbox, confidence=round(min(r.confidence for r in group), 4))


def _date_leading_rows(transactions: list[Transaction]) -> None:
    """Rows before the first dated row inherit the first date (e.g. "LAST MONTH'S BALANCE")."""
    first_dated = next((t.date for t in transactions if t.date), None)
    for t in transactions:
        if t.date is not None:
            break
        t.date = first_dated


def _balance_row_field(result: ExtractionResult, name: str, row: Row) -> None:
    """An opening/closing balance printed as a table row: a field with that row's place, so
    reconciliation can be re-run from the fields after a correction, and answers can cite it."""
    if name not in result.fields:
        value = row.amounts["balance"]
        result.fields[name] = Field(name=name, value=str(value), confidence=round(0.9 * row.confidence, 4), page=row.page, bbox=row.bbox, raw=row.line.text, source="text")


def _within_closing_balance(txs: list[Transaction], balances: dict[str, Decimal]) -> list[Transaction]:
    """The transactions up to the one that brings the stated opening balance to the stated
    closing balance, when the whole table does not reconcile but such a prefix does: what
    follows (a sample table, a repeated table, rows after an end-of-transactions note) is not
    part of the statement period. Unchanged when a balance is not stated or nothing reconciles."""
    opening, closing = balances.get("opening_balance"), balances.get("closing_balance")
    if opening is None or closing is None or not txs:
        return txs
    running = opening
    ends: list[int] = []
    for n, t in enumerate(txs):
        running += t.amount
        if running == closing and (t.balance is None or t.balance == closing):
            ends.append(n)
    if not ends or ends[-1] == len(txs) - 1:
        return txs
    log.info("statement: %d rows after the closing balance is reached are not transactions of the period",
             len(txs) - ends[-1] - 1)
    return txs[: ends[-1] + 1]


def _iso(d: tuple[int, int, int | None], year: int | None, end_month: int | None) -> str | None:
    day, month, y = d
    if y is None:
        if year is None:
            return None
        y = year - 1 if end_month and month > end_month + 1 else year
    try:
        return date(y, month, day).isoformat()
    except ValueError:
        return None


def _reconcile(result: ExtractionResult, balances: dict[str, Decimal]) -> None:
    txs = result.transactions
    if not txs:
        result.warnings.append("statement table found but no transactions read")
        return
    credits = sum((t.amount for t in txs if t.amount > 0), Decimal(0))
    debits = -sum((t.amount for t in txs if t.amount < 0), Decimal(0))
    result.fields["total_credits"] = Field(name="total_credits", value=str(credits), confidence=0.95, source="computed")
    result.fields["total_debits"] = Field(name="total_debits", value=str(debits), confidence=0.95, source="computed")
    result.fields["transaction_count"] = Field(name="transaction_count", value=str(len(txs)), confidence=0.95, source="computed")
    opening = balances.get("opening_balance")
    closing = balances.get("closing_balance")
    first_bal = next(((i, t.balance) for i, t in enumerate(txs) if t.balance is not None), None)
    if opening is None and first_bal is not None:
        i, bal = first_bal
        opening = bal - sum((t.amount for t in txs[: i + 1]), Decimal(0))
        result.fields["opening_balance"] = Field(name="opening_balance", value=str(opening), confidence=0.7, source="computed")
    if closing is None:
        last = next((t.balance for t in reversed(txs) if t.balance is not None), None)
        if last is not None:
            closing = last
            result.fields["closing_balance"] = Field(name="closing_balance", value=str(closing), confidence=0.7, source="computed")
    reconcile_checks(result)
    if opening is None or closing is None:
        result.warnings.append("opening/closing balance not found: totals not reconciled")


def _amount_field(result: ExtractionResult, name: str) -> tuple[Decimal | None, str | None]:
    """(value, None), (None, None) when absent, or (None, why) when the field is no amount."""
    f = result.fields.get(name)
    if f is None or f.value is None:
        return None, None
    value = to_decimal(f.value)
    if value is None:
        return None, f"the {field_label(name)} {f.value!r} is not an amount"
    return value, None


def reconcile_checks(result: ExtractionResult) -> None:
    """Running balance and totals checks from the current fields and transactions.

    Run at extraction and again after a customer corrects a balance, so the Checks panel and
    the chat always agree. A balance field that is not an amount leaves the totals "not read"."""
    txs = result.transactions
    if not txs:
        return
    opening, bad_opening = _amount_field(result, "opening_balance")
    closing, bad_closing = _amount_field(result, "closing_balance")
    _running_balance(result, opening)
    credits = sum((t.amount for t in txs if t.amount > 0), Decimal(0))
    debits = -sum((t.amount for t in txs if t.amount < 0), Decimal(0))
    if bad_opening or bad_closing:
        result.add_check(CheckName.balance_reconciles, None, bad_opening or bad_closing)
    elif opening is not None and closing is not None:
        expected = opening + credits - debits
        ok = expected == closing
        result.add_check(
            CheckName.balance_reconciles,
            ok,
            f"opening {opening} + credits {credits} - debits {debits} = {expected}" + (f" = closing {closing}" if ok else f" != closing {closing} (difference {closing - expected})"),
        )
    else:
        result.checks.pop(CheckName.balance_reconciles, None)


def _rows(numbers: list[int]) -> str:
    """'row 30', 'rows 3 and 7', 'rows 2, 5 and 9'."""
    if len(numbers) == 1:
        return f"row {numbers[0]}"
    return "rows " + ", ".join(map(str, numbers[:-1])) + f" and {numbers[-1]}"


def _running_balance(result: ExtractionResult, opening: Decimal | None) -> None:
    """Carry the computed balance; where a printed balance disagrees, try both the printed and
    the computed chain on the next row (a misprinted balance vs. a wrong amount)."""
    txs = result.transactions
    broken: list[int] = []
    checked = 0
    chains: list[Decimal] = [opening] if opening is not None else []
    for n, t in enumerate(txs, start=1):
        t.row_ok = None
        amount = t.amount
        chains = [c + amount for c in chains]
        if t.balance is None:
            continue
        printed = t.balance
        if not chains:
            chains = [printed]
            continue
        checked += 1
        if printed in chains:
            t.row_ok = True
            chains = [printed]
        else:
            t.row_ok = False
            broken.append(n)
            chains = [chains[0], printed]
    if checked:
        result.add_check(
            CheckName.running_balance,
            not broken,
            f"{checked} printed balances checked, all consistent" if not broken else f"the running balance breaks at {_rows(broken)} of {len(txs)}",
        )
    else:
        result.checks.pop(CheckName.running_balance, None)
