"""Build the PDF documents of the Cedar Valley Savings Bank default knowledge base.

The Markdown, HTML, TXT and CSV documents in ``knowledge_base/documents/`` are written by hand;
the PDFs are generated here because a PDF cannot be reviewed in a diff. Each page is laid out from
its own HTML fragment (``pymupdf`` ``insert_htmlbox``), so the page a fact lands on is decided in
this file and the eval set (``knowledge_base/eval/questions.jsonl``) can cite pages reliably.

One PDF is deliberately *scanned*: its page is rendered to a greyscale raster, lightly speckled and
rotated, and saved as an image-only PDF with no text layer, to exercise the OCR fallback of ingest.

The build is deterministic: fixed metadata dates, a seeded random generator and pymupdf's
reproducible save, so re-running it leaves the committed PDFs unchanged.

Usage::

    python scripts/build_kb.py              # regenerate into knowledge_base/documents/
    python scripts/build_kb.py --out /tmp/kb
"""

from __future__ import annotations

import argparse
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pymupdf
from PIL import Image

log = logging.getLogger("build_kb")

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = PROJECT_ROOT / "knowledge_base" / "documents"

PAGE_RECT = pymupdf.paper_rect("letter")
MARGIN = 54  # points: 0.75 inch on every side
FIXED_DATE = "D:20260105090000Z"  # metadata date; fixed so rebuilt PDFs are byte-stable
SCAN_DPI = 150
SCAN_SEED = 20260105
SCAN_ROTATION_DEG = 0.6

CSS = """
body { font-family: sans-serif; font-size: 10pt; line-height: 1.3; color: #000; }
h1 { font-size: 16pt; margin: 0 0 4pt 0; color: #1d3b2a; }
h2 { font-size: 12.5pt; margin: 10pt 0 3pt 0; color: #1d3b2a; }
p { margin: 0 0 5pt 0; }
li { margin: 0 0 2pt 0; }
table { border-collapse: collapse; width: 100%; margin: 4pt 0 6pt 0; }
th, td { border: 0.6pt solid #555; padding: 2.5pt 4pt; text-align: left; vertical-align: top; }
th { background-color: #dfe9e2; }
.small { font-size: 8.5pt; color: #333; }
.banner { font-size: 9pt; color: #1d3b2a; border-bottom: 1pt solid #1d3b2a; margin-bottom: 6pt; }
"""

SCAN_CSS = """
body { font-family: serif; font-size: 13pt; line-height: 1.35; color: #000; }
h1 { font-size: 19pt; margin: 0 0 6pt 0; }
h2 { font-size: 14.5pt; margin: 12pt 0 4pt 0; }
p { margin: 0 0 7pt 0; }
table { border-collapse: collapse; width: 100%; margin: 4pt 0 8pt 0; }
th, td { border: 1pt solid #000; padding: 4pt 6pt; text-align: left; }
"""


@dataclass(frozen=True)
class PdfSpec:
    """One PDF document: its file name, title and one HTML fragment per page."""

    filename: str
    title: str
    subject: str
    pages: tuple[str, ...]
    scanned: bool = False


def _banner(title: str, page_no: int, total: int) -> str:
    return (
        f'<p class="banner">Cedar Valley Savings Bank &#8212; {title} '
        f"&#8212; Page {page_no} of {total}</p>"
    )


FEE_SCHEDULE = PdfSpec(
    filename="fee-schedule.pdf",
    title="Schedule of Fees for Personal Accounts",
    subject="Personal account fees, effective January 5, 2026",
    pages=(
        """
<h1>Schedule of Fees for Personal Accounts</h1>
<p>Effective January 5, 2026. This schedule lists the fees that may be charged on personal
deposit accounts at Cedar Valley Savings Bank, Member FDIC. It replaces all earlier schedules.
Fees are charged to the account the service relates to unless stated otherwise. Questions:
Customer Service at 1-800-555-0142.</p>
<h2>1. Monthly maintenance fees</h2>
<table>
<tr><th>Account</th><th>Monthly fee</th><th>How to avoid the fee</th></tr>
<tr><td>Everyday Checking</td><td>$8</td><td>$1,500 minimum daily balance, or direct deposits
totaling $500 or more during the statement cycle</td></tr>
<tr><td>Premier Checking</td><td>$20</td><td>$10,000 combined balance across all your deposit
accounts and CDs</td></tr>
<tr><td>Student Checking (ages 17 to 24)</td><td>$0</td><td>No fee while you are 17 to 24
years old</td></tr>
<tr><td>Basic Savings</td><td>$5</td><td>$300 minimum daily balance, or any automatic transfer
of $25 or more from checking each month</td></tr>
<tr><td>Money Market Savings</td><td>$12</td><td>$2,500 minimum daily balance</td></tr>
</table>
<h2>2. Overdraft and returned item fees</h2>
<table>
<tr><th>Service</th><th>Fee</th></tr>
<tr><td>Overdraft fee (item paid when your balance is too low)</td><td>$32 per item</td></tr>
<tr><td>Returned item (NSF) fee (item returned unpaid)</td><td>$32 per item</td></tr>
<tr><td>Maximum overdraft and NSF fees per business day</td><td>3 fees ($96)</td></tr>
<tr><td>Account overdrawn by $10 or less at end of day</td><td>No fee</td></tr>
<tr><td>Overdraft Protection transfer from linked savings or credit card</td><td>$10 per transfer</td></tr>
<tr><td>Extended overdraft fee</td><td>None &#8212; we do not charge one</td></tr>
</table>
<p>Details of overdraft coverage, the Next-Day Grace refund and opting in for debit card
transactions are explained in the Overdraft Services document.</p>
<h2>3. Excess withdrawal fee (savings)</h2>
<p>Basic Savings and Money Market Savings accounts include 6 free withdrawals or transfers out
per statement cycle. Each additional withdrawal costs $3. Withdrawals made in person at a teller
or at a Cedar Valley ATM do not count toward the limit.</p>
""",
        """
<h1>Schedule of Fees (continued)</h1>
<h2>4. Transfers and wires</h2>
<table>
<tr><th>Service</th><th>Online / mobile</th><th>At a branch</th></tr>
<tr><td>Outgoing domestic wire</td><td>$25</td><td>$30</td></tr>
<tr><td>Outgoing international wire (sent in U.S. dollars or foreign currency)</td><td>$45</td><td>$50</td></tr>
<tr><td>Incoming domestic wire</td><td>$15</td><td>$15</td></tr>
<tr><td>Incoming international wire</td><td>$20</td><td>$20</td></tr>
<tr><td>Wire recall, amendment or trace</td><td>$35</td><td>$35</td></tr>
<tr><td>Standard external transfer (ACH, 3 business days)</td><td>Free</td><td>Free</td></tr>
<tr><td>Next-day external transfer (ACH)</td><td>$3</td><td>not offered</td></tr>
<tr><td>Same-Day ACH external transfer</td><td>$5</td><td>not offered</td></tr>
</table>
<p>Premier Checking customers pay no fee for incoming wires and receive two free outgoing
domestic wires per statement cycle.</p>
<h2>5. Card and ATM fees</h2>
<table>
<tr><th>Service</th><th>Fee</th></tr>
<tr><td>Cedar Valley ATMs</td><td>Free</td></tr>
<tr><td>Non-Cedar Valley ATM in the U.S.</td><td>$3.00 per withdrawal</td></tr>
<tr><td>ATM outside the U.S.</td><td>$5.00 per withdrawal plus the foreign transaction fee</td></tr>
<tr><td>Debit card foreign transaction fee</td><td>3% of the U.S. dollar amount</td></tr>
<tr><td>Replacement debit card, standard delivery</td><td>Free</td></tr>
<tr><td>Replacement debit card, expedited delivery (2 business days)</td><td>$25</td></tr>
</table>
<p>Premier Checking refunds up to 4 non-Cedar Valley ATM fees per statement cycle, including fees
charged by the ATM owner.</p>
""",
        """
<h1>Schedule of Fees (continued)</h1>
<h2>6. Other services</h2>
<table>
<tr><th>Service</th><th>Fee</th></tr>
<tr><td>Stop payment order (check or ACH)</td><td>$30</td></tr>
<tr><td>Cashier's check</td><td>$10</td></tr>
<tr><td>Money order (customers only)</td><td>$5</td></tr>
<tr><td>Returned deposited item (a check you deposited bounced)</td><td>$12</td></tr>
<tr><td>Paper statement (waived if you are 65 or older)</td><td>$2 per month</td></tr>
<tr><td>Copy of a statement or check</td><td>$5 each</td></tr>
<tr><td>Account research</td><td>$25 per hour, 1 hour minimum</td></tr>
<tr><td>Dormant account fee (no customer activity for 24 months)</td><td>$5 per month</td></tr>
<tr><td>Early account closing (within 90 days of opening)</td><td>$25</td></tr>
<tr><td>Coin counting</td><td>Free for customers; 5% of the total for non-customers</td></tr>
<tr><td>Legal process (levy or garnishment)</td><td>$100 per order</td></tr>
</table>
<p class="small">Fees may change. We will give you at least 30 days' notice before a fee
increase takes effect. Cedar Valley Savings Bank, 400 Cedar Valley Parkway, Millbrook, OR 97321.</p>
""",
    ),
)

WIRES_AND_ACH = PdfSpec(
    filename="wire-and-ach-transfers.pdf",
    title="Wire Transfers and ACH Transfers",
    subject="Limits, cut-off times, delivery times and fraud safeguards for transfers",
    pages=(
        """
<h1>Wire Transfers and ACH Transfers</h1>
<p>This guide explains how to move money out of and into your Cedar Valley Savings Bank
accounts: wire transfers for fast, final payments and ACH transfers for lower-cost transfers
between your own accounts at other banks. All times are Pacific Time (PT). A business day is
Monday to Friday, excluding federal holidays.</p>
<h2>Domestic wire transfers</h2>
<p>Domestic wires are sent through the Federal Reserve and usually reach the receiving bank
within a few hours on the same business day. To send a domestic wire you need the recipient's
full name and address, the receiving bank's name, its 9-digit routing number and the
recipient's account number.</p>
<table>
<tr><th>Channel</th><th>Cut-off time for same-day sending</th><th>Daily limit</th></tr>
<tr><td>Online and mobile banking</td><td>4:00 p.m. PT</td><td>$50,000</td></tr>
<tr><td>At a branch</td><td>3:00 p.m. PT</td><td>No set limit (subject to verification)</td></tr>
</table>
<p>Wire requests received after the cut-off time, or on a weekend or holiday, are sent on the
next business day. Online wires are available after your account has been open for 30 days.
The fees are listed in the Schedule of Fees: $25 for an outgoing domestic wire sent online and
$30 at a branch.</p>
<h2>Receiving a wire</h2>
<p>Give the sender our routing number 271970513, your account number, and your name exactly as
it appears on the account. Incoming domestic wires received by 5:00 p.m. PT are credited the
same business day.</p>
""",
        """
<h1>International wire transfers</h1>
<p>International wires are sent through the SWIFT network. Our SWIFT/BIC code is CVSBUS44. You
will need the recipient's IBAN (or account number), the receiving bank's SWIFT/BIC code and the
purpose of the payment. You may send the wire in U.S. dollars or in one of 23 foreign
currencies; when you send foreign currency we show you the exchange rate before you confirm.</p>
<table>
<tr><th>Item</th><th>International wire</th></tr>
<tr><td>Cut-off time (online and branch)</td><td>2:00 p.m. PT</td></tr>
<tr><td>Daily limit, online and mobile</td><td>$25,000</td></tr>
<tr><td>Typical delivery time</td><td>1 to 5 business days</td></tr>
<tr><td>Our fee</td><td>$45 online, $50 at a branch</td></tr>
</table>
<p>Intermediary and receiving banks may deduct their own fees from the amount sent. We cannot
send wires to countries or persons subject to U.S. sanctions.</p>
<h2>Cancelling or recalling a wire</h2>
<p>You can cancel a wire at no charge until it has been sent. Once sent, a wire is final: we can
ask the receiving bank to return the funds (a recall, $35), but the return is not guaranteed and
requires the recipient's consent. Contact us as soon as possible at 1-800-555-0142.</p>
<h2>Wire fraud safeguards</h2>
<p>For security, we call you back at the phone number on file before releasing any wire of
$10,000 or more requested online. Cedar Valley will never email or text you to change wire
instructions. If a realtor, title company or relative sends new payment instructions by email,
call them at a number you already know before you send money.</p>
""",
        """
<h1>ACH transfers (external transfers)</h1>
<p>ACH transfers move money between your Cedar Valley account and your own account at another
U.S. bank. Before the first transfer we verify the external account with two small trial
deposits (under $1.00 each), which arrive within 2 business days; confirm the amounts in online
banking to activate the link.</p>
<table>
<tr><th>Speed</th><th>Submit by</th><th>Delivery</th><th>Fee</th></tr>
<tr><td>Standard</td><td>6:00 p.m. PT</td><td>3 business days</td><td>Free</td></tr>
<tr><td>Next-day</td><td>6:00 p.m. PT</td><td>Next business day</td><td>$3</td></tr>
<tr><td>Same-Day ACH</td><td>11:30 a.m. PT</td><td>Same business day</td><td>$5</td></tr>
</table>
<h2>Outgoing ACH limits</h2>
<table>
<tr><th>Customer</th><th>Per business day</th><th>Per rolling 30 days</th></tr>
<tr><td>Accounts open 60 days or more</td><td>$10,000</td><td>$25,000</td></tr>
<tr><td>Accounts open less than 60 days</td><td>$2,500</td><td>$5,000</td></tr>
</table>
<p>Incoming ACH transfers (for example, pulling money in from your account at another bank) are
limited to $10,000 per business day. Transfers between your own Cedar Valley accounts have no
limit and are available immediately.</p>
<h2>CedarPay person-to-person payments</h2>
<p>CedarPay lets you send money to another person using their email address or U.S. mobile
number. The limit is $2,500 per day and $10,000 per rolling 30 days. CedarPay payments usually
arrive within minutes and cannot be cancelled once the recipient is enrolled, so only pay
people you know and trust.</p>
<h2>Returned and unauthorized ACH debits</h2>
<p>If an ACH debit you did not authorize appears on your account, tell us within 60 days of
the statement date. To stop a future ACH debit, place a stop payment order ($30) at least 3
business days before the payment is scheduled.</p>
""",
    ),
)

LOANS = PdfSpec(
    filename="loans-and-mortgages.pdf",
    title="Personal Loans, Home Equity and Mortgages",
    subject="Loan products, indicative rate ranges and servicing",
    pages=(
        """
<h1>Personal Loans</h1>
<p>A Cedar Valley personal loan is an unsecured, fixed-rate installment loan you can use to
consolidate debt, pay for a home project or cover a large expense. You do not need to be a
Cedar Valley customer to apply, but you must be at least 18 and live in Oregon or
Washington.</p>
<table>
<tr><th>Feature</th><th>Personal loan</th></tr>
<tr><td>Loan amount</td><td>$2,000 to $40,000</td></tr>
<tr><td>Terms</td><td>12 to 60 months</td></tr>
<tr><td>Fixed APR range</td><td>8.49% to 21.99% APR</td></tr>
<tr><td>Autopay discount</td><td>0.25% off your APR with automatic payment from a Cedar Valley checking account</td></tr>
<tr><td>Origination fee</td><td>None</td></tr>
<tr><td>Prepayment penalty</td><td>None</td></tr>
<tr><td>Late fee</td><td>5% of the payment or $25, whichever is less, after a 15-day grace period</td></tr>
</table>
<p>Your rate depends on your credit history, income, debt-to-income ratio and the term you
choose. Applying shows you your rate with a soft credit inquiry, which does not affect your
credit score; a hard inquiry is made only if you accept the offer.</p>
<h2>Decision and funding</h2>
<p>Most applications receive a decision within 1 business day. After you sign the loan
agreement, funds are deposited to your Cedar Valley account within 2 business days, or sent
to an account at another bank within 4 business days. We may ask for your two most recent pay
stubs or last year's tax return to verify income.</p>
""",
        """
<h1>Home Loans and Mortgages</h1>
<p>We originate home loans for owner-occupied homes, second homes and investment properties
located in Oregon and Washington. Indicative rate ranges are shown below; your actual rate
depends on credit score, loan-to-value ratio, loan amount and rate lock period. Rates are
reviewed every business morning and are not a commitment to lend.</p>
<table>
<tr><th>Product</th><th>Indicative APR range</th><th>Minimum down payment</th></tr>
<tr><td>30-year fixed</td><td>6.375% to 7.125%</td><td>5%</td></tr>
<tr><td>15-year fixed</td><td>5.625% to 6.375%</td><td>5%</td></tr>
<tr><td>7/6 ARM (adjustable)</td><td>6.125% to 6.875%</td><td>10%</td></tr>
<tr><td>FHA 30-year fixed</td><td>6.000% to 6.750%</td><td>3.5%</td></tr>
<tr><td>Home equity line of credit (HELOC)</td><td>Prime + 0.50% variable</td><td>Not applicable</td></tr>
</table>
<h2>Mortgage basics</h2>
<ul>
<li>With less than 20% down on a conventional loan you pay private mortgage insurance (PMI);
you can ask us to remove it once your balance falls to 80% of the original home value.</li>
<li>Pre-approval letters are valid for 90 days.</li>
<li>Rate locks of 45 days are free. Each 15-day extension costs $250.</li>
<li>We charge no application fee. The appraisal, typically $550 to $750, is paid by the
borrower.</li>
<li>First-time buyers who complete an approved homebuyer education course receive a $500
credit toward closing costs.</li>
</ul>
<h2>Home equity line of credit</h2>
<p>HELOC lines range from $10,000 to $250,000, up to 85% combined loan-to-value. The draw period
is 10 years with interest-only payments, followed by a 20-year repayment period. There is no
annual fee in the first year, then $75 per year.</p>
""",
        """
<h1>Loan Payments and Servicing</h1>
<h2>Making payments</h2>
<p>You can pay your loan by automatic payment from any checking account, online banking, at a
branch, or by mail to Cedar Valley Loan Servicing, P.O. Box 7740, Millbrook, OR 97321. Payments
received by 5:00 p.m. PT on a business day are credited the same day. Extra payments go to
principal unless you tell us otherwise.</p>
<h2>Financial hardship</h2>
<p>If you are having trouble making payments, call Loan Servicing before you miss a payment. We
can review options such as a payment deferral of up to 3 months on personal loans, a
modified payment plan, or a mortgage forbearance plan. Asking for help does not by itself
affect your credit report.</p>
<h2>Payoff quotes and lien releases</h2>
<p>Request a payoff quote online or by phone; it is valid for 10 days. After a mortgage is paid
in full we record the lien release with the county within 30 days and mail you the
documents.</p>
<h2>Contact Loan Servicing</h2>
<table>
<tr><th>Team</th><th>Phone</th><th>Hours (PT)</th></tr>
<tr><td>Loan Servicing</td><td>1-800-555-0155</td><td>Monday to Friday, 8:00 a.m. to 6:00 p.m.</td></tr>
<tr><td>Mortgage applications</td><td>1-800-555-0157</td><td>Monday to Saturday, 8:00 a.m. to 7:00 p.m.</td></tr>
</table>
<p class="small">Cedar Valley Savings Bank, Equal Housing Lender, NMLS ID 4471203. All loans
subject to credit approval.</p>
""",
    ),
)

# The scanned notice is the only document with safe deposit box fees and the Riverside
# renovation dates, so the eval set can tell whether the OCR fallback actually read it.
RIVERSIDE_NOTICE = PdfSpec(
    filename="riverside-branch-notice-scanned.pdf",
    title="Riverside Branch Notice",
    subject="Scanned customer notice: Riverside branch renovation and safe deposit boxes",
    scanned=True,
    pages=(
        """
<h1>NOTICE TO OUR CUSTOMERS</h1>
<h2>Riverside Branch, 1275 River Road, Millbrook</h2>
<p>The Riverside Branch will be closed for renovation.</p>
<p>Closed from: March 2, 2026</p>
<p>Closed until: March 27, 2026</p>
<p>Reopening: Monday, March 30, 2026 at 9:00 a.m.</p>
<p>During the closure, please visit our Main Office at 400 Cedar Valley Parkway. The Riverside
night deposit box and ATM will remain open.</p>
<h2>Safe deposit boxes</h2>
<p>Riverside safe deposit boxes will be moved to the Main Office vault on March 2, 2026.
Bring your key and photo ID to access your box there.</p>
<table>
<tr><th>Box size (inches)</th><th>Annual rent</th></tr>
<tr><td>3 x 5</td><td>$45</td></tr>
<tr><td>5 x 5</td><td>$65</td></tr>
<tr><td>3 x 10</td><td>$85</td></tr>
<tr><td>10 x 10</td><td>$150</td></tr>
</table>
<p>Lost key replacement: $25 per key. Drilling a box when all keys are lost: $175.</p>
<p>Questions? Call the Main Office at 503-555-0110.</p>
""",
    ),
)

ALL_PDFS: tuple[PdfSpec, ...] = (FEE_SCHEDULE, WIRES_AND_ACH, LOANS, RIVERSIDE_NOTICE)


def _metadata(spec: PdfSpec) -> dict[str, str]:
    return {
        "title": f"Cedar Valley Savings Bank - {spec.title}",
        "author": "Cedar Valley Savings Bank",
        "subject": spec.subject,
        "keywords": "",
        "creator": "scripts/build_kb.py",
        "producer": "PyMuPDF",
        "creationDate": FIXED_DATE,
        "modDate": FIXED_DATE,
    }


def _layout_pages(spec: PdfSpec, css: str, with_banner: bool) -> pymupdf.Document:
    """Lay out each HTML fragment on its own page; refuse silently-truncated content."""
    doc = pymupdf.open()
    body = pymupdf.Rect(MARGIN, MARGIN, PAGE_RECT.width - MARGIN, PAGE_RECT.height - MARGIN)
    total = len(spec.pages)
    for number, html in enumerate(spec.pages, start=1):
        page = doc.new_page(width=PAGE_RECT.width, height=PAGE_RECT.height)
        content = (_banner(spec.title, number, total) if with_banner else "") + html
        spare_height, scale = page.insert_htmlbox(body, content, css=css, scale_low=1)
        log.debug("%s page %d: %.0f pt spare", spec.filename, number, spare_height)
        if spare_height < 0 or scale != 1:
            raise ValueError(f"{spec.filename}: page {number} content does not fit on one page")
    return doc


def _speckle_and_tilt(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Make a clean render look scanned: sparse grey speckles and a slight rotation."""
    pixels = np.asarray(image, dtype=np.uint8).copy()
    speckles = rng.random(pixels.shape) < 0.0008
    pixels[speckles] = rng.integers(90, 200, size=int(speckles.sum()), dtype=np.uint8)
    noisy = Image.fromarray(pixels, mode="L")
    return noisy.rotate(SCAN_ROTATION_DEG, resample=Image.Resampling.BICUBIC, fillcolor=255)


def _build_scanned(spec: PdfSpec) -> pymupdf.Document:
    """Render the pages to greyscale rasters and wrap them in an image-only PDF."""
    rendered = _layout_pages(spec, SCAN_CSS, with_banner=False)
    rng = np.random.default_rng(SCAN_SEED)
    scanned = pymupdf.open()
    for page in rendered:
        pixmap = page.get_pixmap(dpi=SCAN_DPI, colorspace=pymupdf.csGRAY)
        image = Image.frombytes("L", (pixmap.width, pixmap.height), pixmap.samples)
        buffer = io.BytesIO()
        _speckle_and_tilt(image, rng).save(buffer, format="PNG", optimize=True)
        out_page = scanned.new_page(width=page.rect.width, height=page.rect.height)
        out_page.insert_image(out_page.rect, stream=buffer.getvalue())
    rendered.close()
    return scanned


def build_pdf(spec: PdfSpec, out_dir: Path) -> Path:
    """Write one PDF of the knowledge base into ``out_dir`` and return its path."""
    doc = _build_scanned(spec) if spec.scanned else _layout_pages(spec, CSS, with_banner=True)
    doc.set_metadata(_metadata(spec))
    target = out_dir / spec.filename
    doc.save(target, garbage=4, deflate=True, no_new_id=True, reproducible=True)
    doc.close()
    log.info("wrote %s (%d bytes)", target, target.stat().st_size)
    return target


def build_all(out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    return [build_pdf(spec, out_dir) for spec in ALL_PDFS]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    build_all(args.out)


if __name__ == "__main__":
    main()
