"""Normalising and hashing identifiers exactly as X matches them."""

import pytest

from xtag.core import identity

# Vectors from X's documentation (see shared/spec/x-conversions-api.md).
X_VECTORS = [
    ("test-email@test.com", "e586883b2b4faf78d48300a79e0e15138d664cdf796ffb86e533170a9893eda8"),
    ("test@twitter.com", "d360d510a224510f373931ce2d6215a799f5a9c1cef221b0149b6b6b50cced62"),
]
PHONE_HASH = "1fa6b8d986d9b9cd01bf36951815158bbde9f520c0567c835dfe34783d0a4231"  # +11234567890


@pytest.mark.parametrize(("raw", "expected"), X_VECTORS)
def test_email_hashes_match_x_vectors(raw, expected):
    assert identity.hash_email(raw) == expected


@pytest.mark.parametrize(
    "raw", ["  Test-Email@Test.com ", "TEST-EMAIL@TEST.COM", "\ttest-email@test.com\n"]
)
def test_email_is_trimmed_and_lower_cased_before_hashing(raw):
    assert identity.hash_email(raw) == X_VECTORS[0][1]


def test_already_hashed_email_passes_through_lower_cased():
    upper = X_VECTORS[0][1].upper()
    assert identity.hash_email(upper) == X_VECTORS[0][1]
    assert identity.hash_email(f"  {X_VECTORS[0][1]} ") == X_VECTORS[0][1]


@pytest.mark.parametrize(
    "raw", ["", "   ", "not-an-email", "a@b", 42, None, ["a@b.co"], "two@@x.com"]
)
def test_non_emails_give_no_hash(raw):
    assert identity.hash_email(raw) is None


def test_phone_with_plus_matches_x_vector():
    assert identity.sha256_hex("+11234567890") == PHONE_HASH
    assert identity.sha256_hex("11234567890") != PHONE_HASH


@pytest.mark.parametrize("raw", ["(123) 456-7890", "123-456-7890", "+1 123 456 7890"])
def test_x_documented_phone_example_hashes_as_x_does(raw):
    # Not a valid NANP number by today's metadata, but a possible one: X hashes it.
    assert identity.hash_phone(raw, "US") == PHONE_HASH


def test_a_possible_number_outside_todays_metadata_is_kept():
    # Area code 200 is not assigned today; a carrier may assign it before the metadata knows.
    assert identity.normalise_phone("(200) 555-0123", "US") == "+12005550123"


@pytest.mark.parametrize(
    ("raw", "region", "e164"),
    [
        ("+1 415 555 2671", None, "+14155552671"),
        ("(415) 555-2671", "US", "+14155552671"),
        ("415.555.2671", "US", "+14155552671"),
        ("1-415-555-2671", "US", "+14155552671"),
        ("+44 20 7946 0958", "US", "+442079460958"),
        ("020 7946 0958", "GB", "+442079460958"),
        ("0044 20 7946 0958", None, "+442079460958"),
        ("030 901820", "DE", "+4930901820"),
        ("+49 30 901820", "FR", "+4930901820"),
        (14155552671, "US", "+14155552671"),
    ],
)
def test_phones_normalise_to_e164_with_the_site_region(raw, region, e164):
    assert identity.normalise_phone(raw, region) == e164
    assert identity.hash_phone(raw, region) == identity.sha256_hex(e164)


@pytest.mark.parametrize(
    ("raw", "region"),
    [
        ("(415) 555-2671", None),  # a local number without a region cannot be placed
        ("12", "US"),
        ("not a phone", "US"),
        ("+999 123", None),
        ("", "US"),
        (None, "US"),
        (True, "US"),
        ("1" * 200, "US"),
        ("+1 415 555 2671", "ZZ"),  # an unknown region does not matter for an international number
    ],
)
def test_invalid_phones_are_dropped_not_crashing(raw, region):
    expected = "+14155552671" if raw == "+1 415 555 2671" else None
    assert identity.normalise_phone(raw, region) == expected


def test_already_hashed_phone_passes_through():
    assert identity.hash_phone(PHONE_HASH.upper()) == PHONE_HASH


def test_first_hashed_skips_unusable_values():
    sources = [{"email": "nope"}, {"Email": "Test@Twitter.com"}]
    assert (
        identity.first_hashed(sources, identity.EMAIL_KEYS, identity.hash_email) == X_VECTORS[1][1]
    )


@pytest.mark.parametrize(
    ("url", "twclid"),
    [
        ("https://shop.example/?twclid=23opevjt88psuo13lu8d020qkn", "23opevjt88psuo13lu8d020qkn"),
        ("https://shop.example/p?utm_source=x&twclid=abc&b=1", "abc"),
        ("https://shop.example/p?twclid=", None),
        ("https://shop.example/p?xtwclid=1&twclid=a%2D1", "a-1"),  # its own name, decoded
        ("https://shop.example/p&twclid=abc", None),  # not in a query
        ("https://shop.example/p?a=1#x&twclid=abc", None),  # in the fragment
        ("https://shop.example/p", None),
        ("not a url", None),
        (None, None),
    ],
)
def test_twclid_from_landing_url(url, twclid):
    assert identity.twclid_from_url(url) == twclid


@pytest.mark.parametrize(
    ("cookie", "twclid"),
    [
        ("23opevjt88psuo13lu8d020qkn", "23opevjt88psuo13lu8d020qkn"),
        ("%7B%22twclid%22%3A%22abc123%22%2C%22timestamp%22%3A1700000000%7D", "abc123"),
        ('{"twclid":"abc123","timestamp":1700000000}', "abc123"),
        ("%7B%22timestamp%22%3A1%7D", None),
        ("%7Bnot json", None),
        ("", None),
        (None, None),
    ],
)
def test_twclid_from_a_first_party_cookie_bare_or_as_x_json(cookie, twclid):
    assert identity.twclid_from_cookie(cookie) == twclid


def test_scrub_removes_raw_email_and_phone_from_free_form_data():
    data = {
        "email": "jane@example.com",
        "phone": "+14155552671",
        "note": "contact Jane@Example.com today",
        "items": [{"owner": "bob@example.org"}],
        "revenue": 12,
    }
    scrubbed = identity.scrub(data)
    text = repr(scrubbed)
    assert "example.com" not in text.lower() and "example.org" not in text
    assert "4155552671" not in text
    assert scrubbed["revenue"] == 12
    assert identity.sha256_hex("jane@example.com") in scrubbed["note"]
