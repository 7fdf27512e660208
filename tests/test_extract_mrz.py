"""MRZ parsing, OCR repair and checks on the cheminfo text cases and real specimen images."""

from __future__ import annotations

import json
from datetime import date

import pytest

from ingest.extract.mrz import parse_mrz, resolve_date

TD3 = ["P<UTOERIKSSON<<ANNA<MARIA<<<<<<<<<<<<<<<<<<<", "L898902C36UTO7408122F1204159ZE184226B<<<<<10"]


def _cases(corpus):
    path = corpus / "ids" / "mrz_text_cases" / "cheminfo_mrz_cases.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_cheminfo_verdicts_match_for_every_format(corpus):
    disagreements = []
    for case in _cases(corpus):
        reading = parse_mrz(case["mrz_lines"])
        assert reading is not None, case["case"]
        if reading.valid != case["valid"]:
            disagreements.append(case["case"])
    assert disagreements == []


def test_cheminfo_fields(corpus):
    for case in _cases(corpus):
        if not case["valid"] or case["format"] not in ("TD1", "TD2", "TD3", "FRENCH_ID", "FRENCH_NATIONAL_ID"):
            continue
        reading = parse_mrz(case["mrz_lines"])
        f = case["fields"]
        # French IDs: we keep the full 12-character card number as printed on the card; cheminfo
        # splits off the issue date and office code in front of it.
        assert reading.fields["document_number"].endswith(f["documentNumber"]), case["case"]
        assert reading.fields["date_of_birth"] == f["birthDate"], case["case"]
        assert reading.fields["surname"] == f["lastName"], case["case"]
        assert reading.fields["given_names"] == f["firstName"], case["case"]


def test_cheminfo_driving_licence_fields(corpus):
    cases = [c for c in _cases(corpus) if c["valid"] and c["format"] in ("FRENCH_DRIVING_LICENSE", "SWISS_DRIVING_LICENSE")]
    assert len(cases) == 2
    for case in cases:
        reading = parse_mrz(case["mrz_lines"])
        f = case["fields"]
        assert reading.format == case["format"], case["case"]
        assert reading.fields["document_type"] == "driving licence", case["case"]
        assert reading.fields["document_code"] == f["documentCode"], case["case"]
        assert reading.fields["document_number"] == f["documentNumber"], case["case"]
        assert reading.fields["issuing_country"] == f["issuingState"], case["case"]
        assert reading.fields["surname"] == f["lastName"], case["case"]
        assert reading.fields["given_names"] == f.get("firstName", ""), case["case"]
        assert reading.fields["expiry_date"] == f.get("expirationDate", ""), case["case"]
        assert reading.fields["date_of_birth"] == f.get("birthDate", ""), case["case"]
    french, swiss = sorted(cases, key=lambda c: c["format"])
    # The French licence's two check digits are the only ones a driving licence carries.
    checks = parse_mrz(french["mrz_lines"]).checks
    assert checks["check_digit_document_number"][0] and checks["check_digit_composite"][0]
    extra = parse_mrz(swiss["mrz_lines"]).fields
    assert (extra["language_code"], extra["pin_code"], extra["version_number"]) == (swiss["fields"]["languageCode"], swiss["fields"]["pinCode"], swiss["fields"]["versionNumber"])


def test_driving_licence_invalid_and_ocr_cases(corpus):
    by_name = {c["case"]: c for c in _cases(corpus)}
    # No check digits on the Swiss licence: the format checks name what is wrong.
    garbled = parse_mrz(by_name["swissDrivingLicense: invalid text"]["mrz_lines"])
    assert not garbled.valid
    failing = {name for name, (ok, _) in garbled.checks.items() if not ok}
    assert failing == {"format_charset", "format_version_number", "format_name"}
    assert "version number" in garbled.checks["format_version_number"][1]
    # OCR confusions repaired by position (cheminfo's own autocorrect example for the Swiss one).
    swiss = parse_mrz(["AAAOOID<<", "FACHE30514Z1ZB097<<B001Z6<<<<<", "MARCHAND<<FA81ENNE<<<<<<<<<<<<"])
    assert swiss.valid and swiss.lines == by_name["swissDrivingLicense: valid MRZ"]["mrz_lines"]
    french = parse_mrz(["D1FRA13AAOOOO26I8I23IMART1N<<9"])
    assert french.valid and french.lines == by_name["frenchDrivingLicense: valid MRZ"]["mrz_lines"]
    # A wrong check digit stays wrong.
    wrong = parse_mrz(["D1FRA13AA000027181231MARTIN<<9"])
    assert not wrong.checks["check_digit_document_number"][0] and not wrong.checks["check_digit_composite"][0]


def test_driving_licences_do_not_take_td1_readings():
    td1 = ["I<UTOD231458907<<<<<<<<<<<<<<<", "7408122F1204159UTO<<<<<<<<<<<6", "ERIKSSON<<ANNA<MARIA<<<<<<<<<<"]
    assert parse_mrz(td1).format == "TD1"
    # One TD1 line read alone is no French licence (its second character is a letter or '<').
    assert parse_mrz(["IDFRAX4RTBPFW46<<<<<<<<<<<<<<<"]) is None
    assert parse_mrz([td1[0]]) is None


def test_invalid_cases_name_the_failing_check(corpus):
    by_name = {c["case"]: c for c in _cases(corpus)}
    utopia = parse_mrz(by_name["td3: Utopia example"]["mrz_lines"])
    assert utopia.check_digits_ok  # the ICAO specimen's digits are right...
    assert not utopia.checks["issuing_country_real"][0]  # ...but Utopia issues no documents
    garbled = parse_mrz(by_name["frenchNationalId: invalid MRZ"]["mrz_lines"])
    assert not garbled.valid and not garbled.checks["format_charset"][0]


def test_ocr_confusions_repaired_only_when_check_digits_pass():
    ocr = ["P<UT0ERIKSSON<<ANNA<MARIA<<<<<<<<<<<<<<KK<<<", "L8989O2C36UT07408I22F12O4159ZE184226B<<<<<1O"]
    reading = parse_mrz(ocr)
    assert reading.lines == TD3
    assert reading.check_digits_ok and reading.corrections
    # A wrong digit that no confusion explains stays wrong, and the check says so.
    broken = parse_mrz([TD3[0], TD3[1][:13] + "7408132" + TD3[1][20:]])
    # In plain words, never the library's own ("birth date hash failed").
    assert broken.checks["check_digit_date_of_birth"] == (
        False, "the check digit does not agree with the date of birth: a character was misread or altered"
    )
    assert not broken.checks["check_digit_composite"][0]


def test_length_repair_of_dropped_fillers():
    reading = parse_mrz([TD3[0][:-3], TD3[1].replace("<<<<<", "<<<<", 1)])
    assert reading.lines == TD3 and reading.check_digits_ok


def test_long_document_number_td1():
    lines = ["IDBEL000590240<6013<<<<<<<<<<<", "8512017F1311048BEL851201002007", "REINARTZ<<ULRIKE<KATIA<E<<<<<<"]
    reading = parse_mrz(lines)
    assert reading.fields["document_number"] == "000590240601"
    assert reading.checks["check_digit_document_number"][0]


def test_two_digit_years():
    today = date(2026, 11, 23)
    assert resolve_date("740812", "birth", today) == "1974-08-12"
    assert resolve_date("150101", "birth", today) == "2015-01-01"
    assert resolve_date("120415", "expiry", today) == "2012-04-15"
    assert resolve_date("450101", "expiry", today) == "2045-01-01"
    assert resolve_date("991231", "expiry", today) == "1999-12-31"
    assert resolve_date("741312", "birth", today) is None


@pytest.fixture(scope="module")
def passport(corpus):
    from ingest.extract import extract

    return extract(corpus / "ids" / "passporteye" / "tests_data" / "passport-td3.jpg", today=date(2026, 11, 23))


def test_passport_image_end_to_end(passport):
    assert passport.doc_type == "passport"
    assert passport.value("surname") == "ERIKSSON"
    assert passport.value("given_names") == "ANNA MARIA"
    assert passport.value("document_number") == "L898902C3"
    assert passport.value("date_of_birth") == "1974-08-12"
    assert passport.value("expiry_date") == "2012-04-15"
    assert passport.fields["document_number"].sensitive
    for name in ("check_digit_document_number", "check_digit_date_of_birth", "check_digit_expiry_date", "check_digit_composite"):
        assert passport.checks[name].ok, name
    assert not passport.checks["expired"].ok and "expired on 2012-04-15" in passport.checks["expired"].detail
    assert passport.checks["under_age"].ok


def test_passport_printed_zone_cross_checked(passport):
    assert passport.checks["visual_surname"].ok
    assert passport.checks["visual_document_number"].ok
    assert passport.checks["visual_date_of_birth"].ok
    assert passport.fields["printed_date_of_birth"].value == "1974-08-12"


def _lines(*texts):
    from docteller.model import BBox
    from docteller.protocols import OcrLine, OcrResult

    lines = [OcrLine(text=t, bbox=BBox(x0=10, y0=10 + 40 * i, x1=600, y1=40 + 40 * i), confidence=0.97) for i, t in enumerate(texts)]
    return OcrResult(lines=lines, width=620, height=40 * len(texts) + 20, engine="test")


def test_mrz_hint_turns_only_unread_or_upside_down_zones():
    from ingest.extract.identity import mrz_hint

    # A zone that reads the right way up but fails a check digit (the 7 of the birth date
    # check is wrong): another turn would re-read the same glyphs, so no hint.
    failing = _lines("P<UTOERIKSSON<<ANNA<MARIA<<<<<<<<<<<<<<<<<<<", "L898902C36UTO7408127F1204159ZE184226B<<<<<10")
    assert not mrz_hint(failing)
    # Filler runs read as '>>>': the photo is upside down.
    assert mrz_hint(_lines("01<<<<<B622481EZ9514021F2218047OTU63C209898L", ">>>>>>>>>>>AIRAM>ANNA>>NOSSKIRE"))
    # Fillers with no zone around them (the detector split the lines oddly).
    assert mrz_hint(_lines("ERIKSSON<<<", "ANNA"))
    assert not mrz_hint(_lines("Surname/Nom", "ERIKSSON"))


def test_driving_licence_reading_becomes_an_id_result_without_an_invented_sex(corpus):
    from docteller.model import ExtractionResult
    from ingest.extract.identity import mrz_result

    case = next(c for c in _cases(corpus) if c["case"] == "frenchDrivingLicense: valid MRZ")
    result = ExtractionResult(doc_id="licence", source="licence.png")
    mrz_result(result, parse_mrz(case["mrz_lines"]), today=date(2026, 11, 24))
    assert result.doc_type == "id" and result.fields["document_type"].value == "driving licence"
    assert result.fields["expiry_date"].value == "2018-12-31" and not result.checks["expired"].ok
    assert "sex" not in result.fields  # a licence's MRZ carries none: not reported as "X"


# --- Checks a customer can trust: plain names, "not read", verdicts that match their details ---


@pytest.fixture(scope="module")
def uk_passport(corpus):
    from ingest.extract import extract

    return extract(corpus / "ids" / "fastmrz" / "passport_uk.jpg", today=date(2026, 11, 23))


@pytest.fixture(scope="module")
def td2_card(corpus):
    from ingest.extract import extract

    return extract(corpus / "ids" / "passporteye" / "tests_data" / "passport-td2.jpg", today=date(2026, 11, 23))


JARGON = ("hash", "genre", "identifier", "_")


def test_checks_carry_plain_labels_and_details(passport, uk_passport, td2_card):
    for result in (passport, uk_passport, td2_card):
        for name, check in result.checks.items():
            assert check.label and not any(word in check.label.lower() for word in JARGON), (name, check.label)
            assert not any(word in check.detail.lower() for word in ("hash", "genre")), (name, check.detail)
    assert passport.checks["check_digit_composite"].label == "Overall check digit"
    assert passport.checks["format_sex"].label == "Sex field format"
    # The machine keys stay as they were: scripts reading --json are not broken.
    assert {"check_digit_composite", "format_sex", "mrz_valid", "expired"} <= set(passport.as_json()["checks"])
    assert passport.as_json()["checks"]["format_sex"]["label"] == "Sex field format"


def test_uk_passport_printed_zone_never_reports_a_false_mismatch(uk_passport):
    # The only "Date of expiry" label OCR finds is on the facing page, printed on its side; the
    # text "below" it was the document number. That is no evidence against the document.
    assert uk_passport.checks["check_digit_composite"].ok and uk_passport.checks["mrz_valid"].ok
    visual = {n: c for n, c in uk_passport.checks.items() if n.startswith("visual_")}
    assert all(c.ok is not False for c in visual.values()), {n: c.detail for n, c in visual.items()}
    printed_expiry = uk_passport.value("printed_expiry_date")
    assert printed_expiry in (None, uk_passport.value("expiry_date"))


def test_td2_card_label_under_a_label_is_passed_over_for_the_date(td2_card):
    # "Valid until/" is followed by its French translation "Valide jusqu'au", then the date.
    assert td2_card.value("printed_expiry_date") == "2012-04-15"
    assert td2_card.checks["visual_expiry_date"].ok
    assert all(f.value != "Valide jusqu’au" for f in td2_card.fields.values())


def test_a_printed_value_of_the_wrong_type_is_not_read():
    from docteller.model import BBox, CheckStatus, ExtractionResult, Field
    from docteller.protocols import OcrLine
    from ingest.extract.identity import cross_check_visual
    from docteller.model import Page as PageContent
    from ingest.extract.visual import typed_value

    assert typed_value("expiry_date", "Valide jusqu'au") is None
    assert typed_value("expiry_date", "707797979") is None  # a document number is no date
    assert typed_value("document_number", "20 MAY /MAI 95") is None  # nor a date a number
    assert typed_value("expiry_date", "15 APR/AVR 12") == "2012-04-15"
    assert typed_value("sex", "F/F") == "F" and typed_value("sex", "Signature") is None
    assert typed_value("surname", "ERIKSSON") == "ERIKSSON" and typed_value("surname", "L898902C3") is None
    # Bilingual sex prints take the ICAO letter; a national code alone is not read, not guessed.
    assert typed_value("sex", "KVK/F") == "F" and typed_value("sex", "K") is None

    from ingest.extract.visual import compare

    # A US-style date that reads two ways agrees if either reading does; a different date does not.
    assert compare("expiry_date", "11/01/94", "1994-11-01") and compare("expiry_date", "11/01/94", "1994-01-11")
    assert not compare("expiry_date", "11/01/94", "1994-11-02")
    assert compare("surname", "LIN, MEI-HUA", "LIN") and not compare("surname", "LIU, MEI-HUA", "LIN")

    def line(text, y):
        return OcrLine(text=text, bbox=BBox(x0=100, y0=y, x1=300, y1=y + 30), confidence=0.95)

    # Only a label word sits under the expiry label: the check cannot be made, which is neither
    # a pass nor a mismatch.
    page = PageContent(number=1, width=600, height=400, words=[], phrases=[line("Date of expiry/", 100), line("Valide jusqu'au", 135)])
    result = ExtractionResult(source="card.jpg", doc_id="x", doc_type="id")
    result.fields["expiry_date"] = Field(name="expiry_date", value="2012-04-15", confidence=0.99, source="mrz")
    cross_check_visual(result, [page])
    check = result.checks["visual_expiry_date"]
    assert check.ok is None and check.status is CheckStatus.not_read
    assert "not read" in check.detail and "is not a date" in check.detail
    assert "printed_expiry_date" not in result.fields


def test_mrz_verdict_names_its_real_reason(corpus, td2_card):
    from docteller.model import ExtractionResult
    from ingest.extract.identity import mrz_result

    utopia = parse_mrz(TD3)
    result = ExtractionResult(source="specimen", doc_id="u")
    mrz_result(result, utopia, today=date(2026, 11, 23))
    verdict = result.checks["mrz_valid"]
    # Every check digit passes, yet the zone is not valid: the detail says why, not just "5/5 pass".
    assert verdict.ok is False
    assert verdict.detail == "all 5 check digits agree, but UTO is the ICAO specimen state Utopia, not a real issuer"
    assert td2_card.checks["mrz_valid"].ok is False and "Utopia" in td2_card.checks["mrz_valid"].detail
    broken = ExtractionResult(source="broken", doc_id="b")
    mrz_result(broken, parse_mrz([TD3[0], TD3[1][:13] + "7408132" + TD3[1][20:]]), today=date(2026, 11, 23))
    assert broken.checks["mrz_valid"].detail == (
        "2 of 5 check digits do not agree (Overall check digit, Date of birth check digit); "
        "also UTO is the ICAO specimen state Utopia, not a real issuer"
    )


def test_correcting_an_id_field_rechecks_expiry_and_the_printed_zone(td2_card):
    from docteller.model import Field
    from ingest.extract import recheck

    result = td2_card.model_copy(deep=True)
    assert result.checks["expired"].ok is False and result.checks["visual_expiry_date"].ok
    result.fields["expiry_date"] = Field(name="expiry_date", value="2031-04-15", confidence=1.0, source="user")
    recheck(result, today=date(2026, 11, 23))
    assert result.checks["expired"].ok and "valid until 2031-04-15" in result.checks["expired"].detail
    # The printed zone still says 2012: the corrected value now disagrees with it, visibly.
    assert result.checks["visual_expiry_date"].ok is False
    assert result.checks["visual_expiry_date"].detail == (
        "the printed zone and your correction disagree: printed '2012-04-15', your correction '2031-04-15'"
    )
