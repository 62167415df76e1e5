"""The endpoint check's small rules, each stated exactly: what an argument or key problem says (and where), how a
Retry-After date without a zone is read, how a key cut at either end of a message is still scrubbed, and how much
of a body an excerpt looks at. Pure functions: no server needed."""
from __future__ import annotations

import calendar
import email.utils
import time

import pytest

from infra import endpoint as ep

KEY = "abcdefghabcdefgh-key-0123"      # starts with a repeated piece, so a false match comes before the real one


# -- API keys: what is wrong, and where ------------------------------------------------------------------------
@pytest.mark.parametrize("key,problem", [
    (123, "is a int, not a string"),
    (None, "is a NoneType, not a string"),
    ("", "is empty"),
])
def test_a_key_that_is_not_text_says_what_it_is(key, problem):
    assert ep.api_key_problem(key) == problem


@pytest.mark.parametrize("key,where", [
    (" sk-0123456789abcdef", "at the start"),
    ("s k-0123456789abcdef", "at position 2 of 20"),
    ("sk-0123456789abcde f", "at position 19 of 20"),
    ("sk-0123456789abcdef ", "at the end"),
])
def test_a_bad_character_in_a_key_is_placed_exactly(key, where):
    problem = ep.api_key_problem(key)
    assert problem is not None and problem.startswith(f"contains a space {where};"), problem


# -- URLs ------------------------------------------------------------------------------------------------------
def test_a_url_that_is_not_text_says_what_it_is():
    assert ep.url_problem(8080) == "is a int, not a string"


@pytest.mark.parametrize("url,problem", [
    ("http://[v1.fe]:8000", "has a malformed [IPv6] host"),     # an IPvFuture literal: urllib takes it, HTTP can't
    ("http://[::1]:8000", None),
    ("http://[fe80::1%25eth0]:8000", None),                      # a zone id is not part of the address
])
def test_bracketed_hosts_must_be_ipv6_addresses(url, problem):
    assert ep.url_problem(url) == problem


@pytest.mark.parametrize("url", ["http://gw:8080/~team/llm", "http://gw:8080/!edge"])
def test_the_printable_ascii_edges_are_allowed_in_a_url(url):
    # '!' (0x21) and '~' (0x7e) are the first and last printable ASCII characters; '~' is common in paths
    assert ep.url_problem(url) is None


@pytest.mark.parametrize("url,name", [("http://gw/\x7f", "a DEL character"), ("http://gw/ a", "a space")])
def test_the_characters_just_outside_are_refused_by_name(url, name):
    problem = ep.url_problem(url)
    assert problem is not None and problem.startswith(f"contains {name};"), problem


# -- Retry-After ------------------------------------------------------------------------------------------------
@pytest.fixture
def local_time_not_utc(monkeypatch):
    """The process's local time zone is New York (a naive date read as local time would be 5 hours off)."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_a_retry_after_date_without_a_zone_is_read_as_utc(local_time_not_utc):
    # RFC 9110 dates are GMT; a server that drops the zone still means GMT, not the checker's local time
    assert time.localtime(0).tm_hour != 0
    now = calendar.timegm((2026, 11, 29, 8, 0, 0))
    assert ep.parse_retry_after("Sun, 29 Nov 2026 08:00:12", now=now) == pytest.approx(12)
    assert ep.parse_retry_after(email.utils.formatdate(now + 12, usegmt=True), now=now) == pytest.approx(12)
    assert ep.parse_retry_after("Sun, 99 Nov 2026 08:00:12", now=now) is None


# -- Scrubbing a key cut at either end of a message --------------------------------------------------------------
def test_the_start_of_a_key_at_the_end_of_a_message_is_scrubbed_after_a_false_match():
    # "abcd" first appears where the key doesn't follow it; the real cut, the key's start, comes later
    scrub = ep.Scrubber(KEY)
    assert scrub("abcd! abcdefghab") == "abcd! ***"


def test_the_end_of_a_key_at_the_start_of_a_message_is_scrubbed_after_a_false_match():
    key = "sk-0123-tail-tail"                   # its last piece, "tail", appears again later in the message
    scrub = ep.Scrubber(key)
    assert scrub("-tail then tail") == "*** then tail"
    assert scrub("ail-tail rest") == "*** rest"


def test_overlapping_cut_points_are_each_tried():
    # a key whose edge repeats one letter: the cut can start (or end) one character after the first candidate
    assert ep.Scrubber("aaaab-0123456789")("see aaaaa") == "see a***"
    assert ep.Scrubber("sk-0123456789-baaaa")("aaaaa rest") == "***a rest"


# -- Excerpts --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("body", [" \n" * 150 + "error: engine dead", (" \n" * 150 + "error: engine dead").encode()])
def test_an_excerpt_skips_a_long_run_of_blank_lines_to_the_message(body):
    # a server that pads its error page with blank lines still shows the error (whitespace collapses first)
    assert ep.excerpt(body, 160) == "error: engine dead"


def test_an_excerpt_is_cut_to_its_limit():
    assert ep.excerpt("x" * 1000, 160) == "x" * 159 + ep.ELLIPSIS


# -- Argument errors are bounded -----------------------------------------------------------------------------------
def test_a_huge_concurrency_value_is_shown_cut_to_40_characters():
    with pytest.raises(ValueError) as err:
        ep.validate_arguments(runtime="vllm", kaito_version="0.12.0", timeout_s=60, request_timeout_s=30,
                              concurrency="9" * 500)
    shown = "'" + "9" * 38 + ep.ELLIPSIS
    assert str(err.value) == (f"concurrency {shown} must be an integer from {ep.MIN_CHECK_CONCURRENCY} to "
                              f"{ep.MAX_CHECK_CONCURRENCY}")


def test_a_huge_timeout_value_is_shown_cut_to_40_characters():
    with pytest.raises(ValueError) as err:
        ep.validate_arguments(runtime="vllm", kaito_version="0.12.0", timeout_s="9" * 500, request_timeout_s=30,
                              concurrency=2)
    assert str(err.value).startswith("timeout '" + "9" * 38 + ep.ELLIPSIS + " ")


def test_a_long_url_is_shown_in_160_characters():
    # a URL quoted in an error line leaves room for the rest of the line (400 characters at most)
    shown = ep.redact_url("http://gw/" + "a" * 10_000)
    assert len(shown) == 160 and shown.startswith("http://gw/aaa") and shown.endswith(ep.ELLIPSIS)


# -- Every printed form of a key is scrubbed whole ------------------------------------------------------------------
TRICKY_KEY = "sk-\"q'\\b/s<a&p>%2B+t"    # a quote, an apostrophe, a backslash, a slash, HTML and URL specials


def _printed_forms(key: str) -> dict[str, str]:
    import html
    import json
    import urllib.parse

    raw = key.encode()
    forms = {
        "as is": key, "JSON": json.dumps(key)[1:-1], "JSON with \\/": json.dumps(key)[1:-1].replace("/", "\\/"),
        "repr": repr(key)[1:-1], "ascii": ascii(key)[1:-1], "unicode_escape": key.encode("unicode_escape").decode(),
        "HTML": html.escape(key), "HTML, quotes kept": html.escape(key, quote=False),
        "percent-encoded": urllib.parse.quote(raw, safe=""), "percent-encoded, / kept": urllib.parse.quote(raw),
        "form-encoded": urllib.parse.quote_plus(raw), "hex": raw.hex(),
        "single-quoted, escaped": key.replace("\\", "\\\\").replace("'", "\\'"),
        "double-quoted, escaped": key.replace("\\", "\\\\").replace('"', '\\"'),
    }
    forms.update({f"{name}, inside a JSON string": json.dumps(text)[1:-1] for name, text in list(forms.items())})
    return forms


# a key refused for its non-ASCII letter is still scrubbed from the refusal's context (the environment gave it)
NON_ASCII_KEY = "sk-\"é'\\ü/x<y&z>%2B+ß"


# repr() quotes a key with an apostrophe and no double quote in "...", leaving the apostrophe unescaped: the
# escaped single-quoted form is then its own
APOSTROPHE_KEY = "sk-it's\\0123456789"


@pytest.mark.parametrize("key", [TRICKY_KEY, NON_ASCII_KEY, APOSTROPHE_KEY], ids=["ascii", "non-ascii", "apostrophe"])
@pytest.mark.parametrize("name", sorted(_printed_forms(TRICKY_KEY)))
def test_every_printed_form_of_a_key_is_scrubbed_whole(key, name):
    # a server or a library prints a key in one of these ways; not one of its characters may stay next to ***
    form = _printed_forms(key)[name]
    assert ep.Scrubber(key)(f"before {form} after") == "before *** after", form


def test_the_tricky_keys_are_what_they_claim():
    assert ep.api_key_problem(TRICKY_KEY) is None
    assert ep.api_key_problem(NON_ASCII_KEY).startswith("contains")
