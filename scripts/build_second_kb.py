"""Build the second evaluation knowledge base: a long deposit-account agreement of a fictional bank.

The bundled Cedar Valley KB is short topical pages (Markdown, fee tables, an FAQ sheet). This one
is written in another style, the way real banks publish their terms: one long agreement with
numbered sections ("7. FUNDS AVAILABILITY") and numbered, run-in subsections ("7.3 Longer
delays may apply."), lettered and numbered lists inside them, and a rate and fee schedule of
ruled tables at the end. Retrieval and answers are measured on it with questions nothing was
tuned on (`knowledge_base/eval/second_kb.jsonl`), to see whether what works on the bundled KB
generalises.

Harbor Ridge Bank and every name, number, address, phone number (555-01xx) and rate in it are
invented. The build is deterministic, like `scripts/build_kb.py`.

Usage::

    python scripts/build_second_kb.py              # writes knowledge_base/second_kb/
    python scripts/build_second_kb.py --out /tmp/kb2
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pymupdf

log = logging.getLogger("build_second_kb")

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = PROJECT_ROOT / "knowledge_base" / "second_kb"
PAGE_RECT = pymupdf.paper_rect("letter")
MARGIN = 60
FIXED_DATE = "D:20260201090000Z"
FILENAME = "harbor-ridge-deposit-account-agreement.pdf"
TITLE = "Harbor Ridge Bank Deposit Account Agreement"

CSS = """
body { font-family: serif; font-size: 9.5pt; line-height: 1.25; color: #000; }
h1 { font-size: 15pt; margin: 0 0 4pt 0; }
h2 { font-size: 11.5pt; margin: 9pt 0 3pt 0; }
p { margin: 0 0 4pt 0; text-align: justify; }
li { margin: 0 0 2pt 0; }
table { border-collapse: collapse; width: 100%; margin: 3pt 0 6pt 0; }
th, td { border: 0.6pt solid #333; padding: 2pt 4pt; text-align: left; vertical-align: top; }
.foot { font-size: 8pt; color: #333; }
"""

PAGES = (
    """
<h1>Harbor Ridge Bank Deposit Account Agreement</h1>
<p>Effective February 1, 2026. Harbor Ridge Bank, N.A., Member FDIC, 400 Quayside Avenue,
Port Alder, OR 97015. Please read this Agreement and keep it with your records. It applies to
every personal checking, savings, money market and certificate of deposit account you open with
us, together with the Rate and Fee Schedule at the end of this Agreement.</p>
<h2>1. DEFINITIONS AND SCOPE</h2>
<p><b>1.1 Who this Agreement covers.</b> In this Agreement "you" and "your" mean each owner of
an account, and "we", "us" and "Harbor Ridge" mean Harbor Ridge Bank, N.A. "Business day" means
Monday through Friday, excluding federal holidays. "Available balance" means the ledger balance
less holds and pending debit card transactions.</p>
<p><b>1.2 Order of precedence.</b> If this Agreement and the Rate and Fee Schedule differ, the
Rate and Fee Schedule controls for rates and fees and this Agreement controls for everything
else.</p>
<p><b>1.3 How to reach us.</b> Call Harbor Ridge Client Care at 1-888-555-0163, Monday through
Saturday, 7:00 a.m. to 9:00 p.m. Pacific Time. To report a lost or stolen card at any hour, call
the 24-hour Card Line at 1-888-555-0177. Write to Harbor Ridge Bank, Client Care, P.O. Box 6100,
Port Alder, OR 97015.</p>
<h2>2. OPENING AND OWNING AN ACCOUNT</h2>
<p><b>2.1 Identification.</b> To open an account you must give us your name, date of birth,
residential address and taxpayer identification number, and show an unexpired government-issued
photo identification. We may also ask for a second form of identification.</p>
<p><b>2.2 Minimum opening deposits.</b> The minimum deposit to open an account is shown in the
Rate and Fee Schedule. We may close an account that still has a zero balance 45 days after it
was opened.</p>
<p><b>2.3 Joint accounts.</b> A joint account is owned by two or more persons with right of
survivorship. Each joint owner may withdraw all of the funds, close the account or pledge it as
collateral without the consent of the other owners. On the death of one owner the funds belong to
the surviving owners.</p>
<p><b>2.4 Payable-on-death beneficiaries.</b> You may name one or more payable-on-death
beneficiaries on an individual or joint account. A beneficiary has no right to the funds while any
owner is alive, and you may change beneficiaries at any time by signing a new beneficiary form at
a branch.</p>
<p><b>2.5 Minors.</b> A person under 18 may own a savings account only jointly with a parent or
legal guardian who is at least 18 years old. Youth Saver accounts convert to Everyday Savings on
the owner's 18th birthday.</p>
<h2>3. DEPOSITS</h2>
<p><b>3.1 Accepting deposits.</b> We may accept, refuse or return any deposit. Checks are
credited subject to final payment. We may refuse to accept a check payable to someone other than
an owner unless it is endorsed to you and all payees are present.</p>
<p><b>3.2 Endorsements.</b> When you deposit a check using the mobile app you must endorse it
"For Harbor Ridge mobile deposit only" below your signature. A check deposited without this
restrictive endorsement may be rejected.</p>
<p><b>3.3 Mobile deposit limits.</b> You may deposit up to $3,000 per business day and up to
$10,000 per rolling 30 days through mobile check deposit. Keep the paper check for 14 days after
the deposit is credited, then destroy it.</p>
<p><b>3.4 Cash deposits.</b> Cash deposits of more than $10,000 in one business day are reported
to the Internal Revenue Service as federal law requires.</p>
""",
    """
<h2>4. WITHDRAWALS AND TRANSACTION LIMITS</h2>
<p><b>4.1 Available balance.</b> You may withdraw only the available balance. We may require
seven days' written notice before a withdrawal from a savings or money market account, although
we do not currently exercise this right.</p>
<p><b>4.2 Savings withdrawal limit.</b> Everyday Savings and Premier Money Market accounts include
six free withdrawals or transfers out per monthly statement cycle. For each further withdrawal we
charge the excess withdrawal fee in the Rate and Fee Schedule. Withdrawals at a Harbor Ridge ATM
or from a teller do not count toward the six.</p>
<p><b>4.3 Daily card limits.</b> Unless we agree a different limit with you:</p>
<ol>
<li>ATM cash withdrawals are limited to $700 per day;</li>
<li>debit card purchases are limited to $3,500 per day; and</li>
<li>cash back at a point of sale is limited to $200 per transaction.</li>
</ol>
<p><b>4.4 Large cash withdrawals.</b> Please give the branch two business days' notice before
withdrawing $5,000 or more in cash so that it can order the currency.</p>
<h2>5. OVERDRAFTS</h2>
<p><b>5.1 Our discretion.</b> If an item would overdraw your account, we may pay it (creating an
overdraft) or return it unpaid. Paying one overdraft does not oblige us to pay another.</p>
<p><b>5.2 Overdraft and returned item fees.</b> We charge the overdraft fee shown in the Rate and
Fee Schedule for each item we pay into overdraft and the returned item fee for each item we
return unpaid. We charge no more than four overdraft or returned item fees per business day, and
no fee when your account is overdrawn by $25 or less at the end of the business day.</p>
<p><b>5.3 Everyday debit card transactions.</b> We do not authorize ATM withdrawals or everyday
debit card purchases into overdraft unless you have opted in. You may opt in or out at any time
in online banking or by calling Client Care.</p>
<p><b>5.4 Overdraft Transfer Service.</b> You may link an Everyday Savings or Premier Money Market
account to your checking account. When an item would overdraw checking, we transfer the amount
needed, rounded up to the next $50, from the linked account. Each transfer costs the overdraft
transfer fee in the Rate and Fee Schedule.</p>
<p><b>5.5 Repayment.</b> You must repay an overdraft immediately. An account that stays overdrawn
for 60 consecutive days will be closed and the balance sent to collections.</p>
<h2>6. CHECKS AND STOP PAYMENTS</h2>
<p><b>6.1 Stale checks.</b> We are not obliged to pay a check presented more than six months
after its date, but we may do so without liability to you.</p>
<p><b>6.2 Postdated checks.</b> We may pay a postdated check before its date unless you have given
us a notice of postdating describing the check with reasonable certainty.</p>
<p><b>6.3 Stop payment orders.</b> You may stop payment on a check you wrote that has not yet
been paid. A stop payment order placed online, by phone or at a branch is effective for six
months and may be renewed for another six months. A stop payment does not apply to a cashier's
check or to a debit card transaction. The fee is in the Rate and Fee Schedule.</p>
<p><b>6.4 Substitute checks.</b> Your statement may include images of paid checks instead of the
originals. You may request a copy of a paid check for up to seven years after it was paid.</p>
""",
    """
<h2>7. FUNDS AVAILABILITY</h2>
<p><b>7.1 Your ability to withdraw funds.</b> Our policy is to make funds from your cash and
check deposits available to you on the first business day after the day we receive your deposit.
Electronic direct deposits are available on the day we receive them. Once funds are available,
you can withdraw them in cash and we will use them to pay checks you have written.</p>
<p><b>7.2 Cut-off times.</b> If you make a deposit before 6:00 p.m. Pacific Time on a business
day that we are open, we will consider that day to be the day of your deposit. Deposits made at a
branch after the branch closes, on a weekend or on a holiday are received on the next business
day. Mobile deposits made before 8:00 p.m. Pacific Time on a business day are received that
day.</p>
<p><b>7.3 Longer delays may apply.</b> In some cases we will not make all of the funds you deposit
by check available on the first business day. The first $275 of your deposits will be available on
the first business day, and the rest by the seventh business day after the day of your deposit.
We may delay availability longer if:</p>
<ol type="a">
<li>we believe a check you deposit will not be paid;</li>
<li>you deposit checks totaling more than $6,725 on any one day;</li>
<li>you redeposit a check that has been returned unpaid;</li>
<li>you have overdrawn your account repeatedly in the last six months; or</li>
<li>there is an emergency, such as failure of computer or communications equipment.</li>
</ol>
<p>We will tell you when the funds will be available, generally by the business day after the day
of your deposit.</p>
<p><b>7.4 New accounts.</b> During the first 30 days an account is open, the first $6,725 of a
day's deposits of cashier's, certified, teller's, traveler's and government checks will be
available on the first business day; the excess will be available by the ninth business day.
Funds from all other check deposits will be available by the tenth business day.</p>
<p><b>7.5 Foreign checks.</b> Checks drawn on banks outside the United States are sent for
collection and are credited only when we receive payment, usually within four to eight weeks. The
collection fee is in the Rate and Fee Schedule.</p>
<h2>8. INTEREST</h2>
<p><b>8.1 Variable rates.</b> Rates on Everyday Savings, Premier Money Market and Interest Checking
are variable and may change at any time at our discretion. Current rates are in the Rate and Fee
Schedule and at any branch.</p>
<p><b>8.2 Compounding and crediting.</b> Interest is compounded daily and credited monthly on the
last day of the statement cycle. We use the daily balance method: we apply a daily periodic rate
to the full principal balance in the account each day.</p>
<p><b>8.3 When interest begins.</b> Interest begins to accrue no later than the business day we
receive credit for a deposit of non-cash items such as checks.</p>
<p><b>8.4 Closing before crediting.</b> If you close a savings or money market account before
interest is credited, you will not receive the accrued interest.</p>
""",
    """
<h2>9. CERTIFICATES OF DEPOSIT</h2>
<p><b>9.1 Terms and rates.</b> A certificate of deposit (CD) earns a fixed rate for its term. The
minimum deposit to open a CD is $1,000. CD terms and rates are in the Rate and Fee Schedule.</p>
<p><b>9.2 Early withdrawal penalties.</b> If you withdraw principal before maturity we charge an
early withdrawal penalty:</p>
<ol>
<li>for terms of 12 months or less, 90 days of interest on the amount withdrawn;</li>
<li>for terms over 12 months up to 36 months, 180 days of interest on the amount withdrawn;
and</li>
<li>for terms over 36 months, 365 days of interest on the amount withdrawn.</li>
</ol>
<p>The penalty may reduce principal. We waive the penalty if an owner dies or is declared legally
incompetent by a court.</p>
<p><b>9.3 Automatic renewal and grace period.</b> Your CD renews automatically at maturity for the
same term at the rate then in effect. You have a grace period of 10 calendar days after maturity
to withdraw funds or change the term without penalty. We will mail you a maturity notice at least
20 days before maturity.</p>
<p><b>9.4 Adding funds.</b> You may not add funds to a CD during its term, except to the
Add-On 18-Month CD, which accepts additional deposits of at least $100 during its first six
months.</p>
<h2>10. STATEMENTS AND ERROR RESOLUTION</h2>
<p><b>10.1 Statements.</b> We send a statement every month for checking and money market
accounts, and every quarter for savings accounts with no electronic transfers in the quarter.
Paper statements cost the paper statement fee in the Rate and Fee Schedule; electronic statements
are free.</p>
<p><b>10.2 Reviewing your statement.</b> You must examine your statement promptly. You must report
an unauthorized signature, alteration or other problem with a check within 30 days after we make
the statement available. If you do not, you cannot assert the problem against us.</p>
<p><b>10.3 Electronic transfer errors.</b> If you think your statement or receipt is wrong, or you
need more information about an electronic transfer on it, call Client Care at 1-888-555-0163 or
write to us as soon as you can. We must hear from you no later than 60 days after we sent the
FIRST statement on which the problem appeared. Tell us your name and account number, describe the
error and explain why you believe it is an error, and tell us the dollar amount of the suspected
error.</p>
<p><b>10.4 Investigation.</b> We will determine whether an error occurred within 10 business days
after we hear from you and will correct any error promptly. If we need more time, we may take up
to 45 days to investigate; if we do, we will credit your account within 10 business days for the
amount you think is in error. For errors on accounts open less than 30 days, point-of-sale
transactions or foreign-initiated transfers, we may take up to 90 days.</p>
""",
    """
<h2>11. ELECTRONIC BANKING AND CARDS</h2>
<p><b>11.1 Lost or stolen cards.</b> Tell us AT ONCE if you believe your card or PIN has been lost
or stolen, by calling the 24-hour Card Line at 1-888-555-0177. You can also lock your card
immediately in the mobile app. Telephoning is the best way of keeping your possible losses down.</p>
<p><b>11.2 Your liability for unauthorized transfers.</b> If you tell us within two business days
after you learn of the loss or theft of your card or PIN, you can lose no more than $50 if someone
used your card without your permission. If you do NOT tell us within two business days, and we can
prove we could have stopped someone from using your card had you told us, you could lose as much
as $500. If your statement shows transfers you did not make, tell us at once; if you do not tell
us within 60 days after the statement was mailed, you may not get back any money you lost after
the 60 days.</p>
<p><b>11.3 Zero liability for card purchases.</b> Under the Harbor Ridge Zero Liability promise
you pay nothing for unauthorized debit card purchases that you report promptly, unless you were
grossly negligent or took part in the fraud.</p>
<p><b>11.4 Replacement cards.</b> A replacement debit card arrives by mail within 7 to 10 business
days. Rush delivery within 2 business days is available for the fee shown in the Rate and Fee
Schedule.</p>
<p><b>11.5 Foreign transactions.</b> Card transactions made in a foreign currency are converted to
U.S. dollars at the network rate and we add the foreign transaction fee in the Rate and Fee
Schedule.</p>
<h2>12. DORMANT AND UNCLAIMED ACCOUNTS</h2>
<p><b>12.1 Inactivity.</b> An account becomes dormant when you have made no deposit or withdrawal
and have not contacted us for 12 months. We charge no fee on a dormant account.</p>
<p><b>12.2 Escheat.</b> If an account stays inactive for three years, Oregon law requires us to
send the balance to the Oregon Department of State Lands as unclaimed property. We will mail you a
notice at least 60 days before we do.</p>
<h2>13. CLOSING AN ACCOUNT AND CHANGES</h2>
<p><b>13.1 Closing by you.</b> You may close your account at any branch, by calling Client Care,
or by signing a written request. A checking account closed within 90 days of opening is charged
the early closing fee in the Rate and Fee Schedule.</p>
<p><b>13.2 Closing by us.</b> We may close your account at any time by giving you reasonable
notice and mailing you a check for the balance. We may close it without prior notice if we
suspect fraud.</p>
<p><b>13.3 Changes to this Agreement.</b> We may change this Agreement at any time. We will notify
you at least 30 days before an adverse change to rates disclosed as fixed, fees or terms takes
effect, unless the law allows a shorter notice.</p>
<h2>14. DISPUTES</h2>
<p><b>14.1 Governing law.</b> This Agreement is governed by federal law and the laws of the State
of Oregon.</p>
<p><b>14.2 Complaints.</b> If you are not satisfied with how we handled a problem, write to the
Office of the Client Advocate, Harbor Ridge Bank, P.O. Box 6190, Port Alder, OR 97015. We
acknowledge complaints within 5 business days and respond in full within 30 calendar days.</p>
""",
    """
<h1>Rate and Fee Schedule</h1>
<p>Effective February 1, 2026. Annual percentage yields (APY) are accurate as of this date and
may change after the account is opened, except for certificates of deposit. Fees may reduce
earnings.</p>
<h2>A. Deposit account rates</h2>
<table>
<tr><th>Account</th><th>Minimum to open</th><th>Balance tier</th><th>Interest rate</th><th>APY</th></tr>
<tr><td>Interest Checking</td><td>$100</td><td>All balances</td><td>0.05%</td><td>0.05%</td></tr>
<tr><td>Everyday Savings</td><td>$25</td><td>All balances</td><td>0.40%</td><td>0.40%</td></tr>
<tr><td>Youth Saver</td><td>$5</td><td>Up to $2,500</td><td>2.96%</td><td>3.00%</td></tr>
<tr><td>Premier Money Market</td><td>$2,500</td><td>$2,500 to $24,999</td><td>1.74%</td><td>1.75%</td></tr>
<tr><td>Premier Money Market</td><td>$2,500</td><td>$25,000 to $99,999</td><td>2.47%</td><td>2.50%</td></tr>
<tr><td>Premier Money Market</td><td>$2,500</td><td>$100,000 and over</td><td>3.39%</td><td>3.45%</td></tr>
</table>
<h2>B. Certificate of deposit rates</h2>
<table>
<tr><th>Term</th><th>Minimum deposit</th><th>Interest rate</th><th>APY</th></tr>
<tr><td>6 months</td><td>$1,000</td><td>3.83%</td><td>3.90%</td></tr>
<tr><td>12 months</td><td>$1,000</td><td>4.06%</td><td>4.15%</td></tr>
<tr><td>Add-On 18 months</td><td>$1,000</td><td>3.70%</td><td>3.77%</td></tr>
<tr><td>24 months</td><td>$1,000</td><td>3.65%</td><td>3.72%</td></tr>
<tr><td>60 months</td><td>$1,000</td><td>3.40%</td><td>3.46%</td></tr>
</table>
<h2>C. Fees</h2>
<table>
<tr><th>Service</th><th>Fee</th></tr>
<tr><td>Interest Checking monthly service fee (waived with a $1,000 minimum daily balance)</td><td>$10</td></tr>
<tr><td>Everyday Savings monthly service fee (waived with a $300 minimum daily balance)</td><td>$4</td></tr>
<tr><td>Overdraft fee, per item paid</td><td>$29</td></tr>
<tr><td>Returned item fee, per item returned</td><td>$29</td></tr>
<tr><td>Overdraft transfer fee, per transfer</td><td>$12</td></tr>
<tr><td>Excess withdrawal fee, per withdrawal over six</td><td>$5</td></tr>
<tr><td>Stop payment order</td><td>$31</td></tr>
<tr><td>Paper statement, per month</td><td>$2</td></tr>
<tr><td>Foreign check collection</td><td>$40</td></tr>
<tr><td>Foreign transaction fee</td><td>3% of the U.S. dollar amount</td></tr>
<tr><td>Rush replacement debit card</td><td>$25</td></tr>
<tr><td>Early account closing (checking closed within 90 days)</td><td>$30</td></tr>
<tr><td>Non-Harbor Ridge ATM withdrawal</td><td>$3</td></tr>
<tr><td>Cashier's check</td><td>$10</td></tr>
</table>
<p class="foot">Harbor Ridge Bank, N.A. Member FDIC. Deposits are insured up to $250,000 per
depositor, per ownership category.</p>
""",
)


def _layout(pages: tuple[str, ...]) -> pymupdf.Document:
    """Each HTML fragment on its own letter page; a fragment that does not fit is an error."""
    doc = pymupdf.open()
    body = pymupdf.Rect(MARGIN, MARGIN, PAGE_RECT.width - MARGIN, PAGE_RECT.height - MARGIN)
    for number, content in enumerate(pages, 1):
        page = doc.new_page(width=PAGE_RECT.width, height=PAGE_RECT.height)
        spare, scale = page.insert_htmlbox(body, content, css=CSS, scale_low=1)
        if spare < 0 or scale != 1:
            raise ValueError(f"{FILENAME}: page {number} content does not fit on one page")
        footer = pymupdf.Rect(MARGIN, PAGE_RECT.height - MARGIN + 12, PAGE_RECT.width - MARGIN, PAGE_RECT.height - 20)
        page.insert_htmlbox(footer, f'<p class="foot">Harbor Ridge Bank Deposit Account Agreement &#8212; '
                                    f"page {number} of {len(pages)}</p>", css=CSS)
    return doc


def build(out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = _layout(PAGES)
    doc.set_metadata({
        "title": TITLE, "author": "Harbor Ridge Bank (fictional)", "subject": "Deposit account agreement",
        "creator": "docteller scripts/build_second_kb.py", "producer": "PyMuPDF",
        "creationDate": FIXED_DATE, "modDate": FIXED_DATE,
    })
    target = out_dir / FILENAME
    doc.save(target, garbage=4, deflate=True, no_new_id=True, reproducible=True)
    doc.close()
    log.info("wrote %s (%d bytes)", target, target.stat().st_size)
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    build(args.out)


if __name__ == "__main__":
    main()
