"""The ``kaito-aks:apiKeys`` setting: its formats, its rules, and the key ids logs and metrics use.

A decision, not rendering: the plan, the Automation driver, the gateway CLI and the Pulumi component all validate
the setting here before anything is rendered or deployed. Messages name the entry, never the key.
"""
from __future__ import annotations

import hashlib
import json
import re
import string
from typing import Any

from infra.errors import UserError


def key_id(key: str) -> str:
    """A non-secret name for a key (logs, rate-limit buckets): the first 12 hex digits of its SHA-256."""
    return "k" + hashlib.sha256(key.encode()).hexdigest()[:12]


SETTING = "kaito-aks:apiKeys"


KEY_MIN_LENGTH = 16                    # shorter is guessable, whatever the rate limit


KEY_MAX_LENGTH = 256


MAX_KEYS = 1000                        # each key is one regex the map tries in turn


KEY_PUNCTUATION = "-._~+/="            # RFC 6750's b64token characters, with letters and digits


KEY_CHARS = frozenset(string.ascii_letters + string.digits + KEY_PUNCTUATION)


MAX_SETTING_CHARS = MAX_KEYS * (KEY_MAX_LENGTH + 16)   # the longest list of the longest keys, with room for JSON


KEY_CHARS_TEXT = "letters, digits and - . _ ~ + / ="


_FORMATS = ("write a JSON list of strings, e.g. '[\"sk-...\",\"sk-...\"]', or the keys separated by commas or "
            "newlines")


_NEW_KEY = "e.g. python3 -c 'import secrets; print(\"sk-\" + secrets.token_urlsafe(32))'"


class ApiKeysError(UserError, ValueError):
    """The ``kaito-aks:apiKeys`` setting is malformed. ``.lines``: one line per problem, each naming the setting
    and the entry by index, never a key or part of one (these lines reach terminals, CI logs and Pulumi)."""


def _kind(value: Any) -> str:
    """What a non-string entry is, in JSON's words (never its value: it could be a key)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, str):
        return "a string"
    return f"a {type(value).__name__}"


def _key_problem(key: str) -> str | None:
    """Why ``key`` can't be an API key, without quoting it; None when it can."""
    if not key:
        return "is empty"
    if len(key) > KEY_MAX_LENGTH:
        return f"is longer than {KEY_MAX_LENGTH} characters"
    if any(c.isspace() for c in key):
        return f"contains whitespace; a key is one word of {KEY_CHARS_TEXT}"
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in key):
        return f"contains a control character; a key is one word of {KEY_CHARS_TEXT}"
    if not KEY_CHARS.issuperset(key):
        return f"contains a character other than {KEY_CHARS_TEXT} (no quotes, backslashes or non-ASCII)"
    if len(key) < KEY_MIN_LENGTH:
        return f"is shorter than {KEY_MIN_LENGTH} characters: too easy to guess; use a random key, {_NEW_KEY}"
    return None


def validate_api_keys(keys: Any) -> list[str]:
    """``keys`` if it is a valid list of API keys, else :class:`ApiKeysError` naming every bad entry by index.

    A key is a string of :data:`KEY_MIN_LENGTH`..:data:`KEY_MAX_LENGTH` characters from :data:`KEY_CHARS` (RFC 6750
    bearer-token characters: no whitespace, quotes, backslashes or control characters, so it is one word on the
    wire and in the nginx configuration); at most :data:`MAX_KEYS` keys, no duplicates.
    """
    if not isinstance(keys, (list, tuple)):
        raise ApiKeysError(f"{SETTING}: {_kind(keys)}, not a list of keys; {_FORMATS}")
    if not keys:
        raise ApiKeysError(f"{SETTING} is empty; set at least one key ({_NEW_KEY})")
    if len(keys) > MAX_KEYS:
        raise ApiKeysError(f"{SETTING}: {len(keys)} keys; at most {MAX_KEYS}")
    problems: list[str] = []
    first_index: dict[str, int] = {}     # key -> the index it first appears at
    for index, key in enumerate(keys):
        where = f"{SETTING}[{index}]"
        if not isinstance(key, str):
            problems.append(f"{where}: {_kind(key)}, not a string; every key is a string")
        elif (problem := _key_problem(key)) is not None:
            problems.append(f"{where}: {problem}")
        elif key in first_index:
            problems.append(f"{where}: the same key as {SETTING}[{first_index[key]}]; remove the duplicate")
        else:
            first_index[key] = index
    if problems:
        raise ApiKeysError(problems)
    return list(keys)


def parse_api_keys(raw: Any) -> list[str]:
    """The ``kaito-aks:apiKeys`` setting -> the keys, validated (:func:`validate_api_keys`).

    Accepted, and nothing else: a JSON list of strings (``'["sk-...","sk-..."]'``, what ``pulumi config set --secret
    apiKeys`` stores), the same list already decoded (YAML/structured config), or a string of keys separated by
    commas and/or newlines (blank entries and the spaces around a key are ignored). Anything else -- JSON that is
    not a list of strings, nested lists, numbers, oversized input -- raises :class:`ApiKeysError` (one line per
    problem, never a key, never a traceback).
    """
    if isinstance(raw, (list, tuple)):
        return validate_api_keys(list(raw))
    if not isinstance(raw, str):
        raise ApiKeysError(f"{SETTING}: {_kind(raw)}, not a list of keys; {_FORMATS}")
    if len(raw) > MAX_SETTING_CHARS:
        raise ApiKeysError(f"{SETTING}: {len(raw)} characters, more than {MAX_KEYS} keys of up to "
                           f"{KEY_MAX_LENGTH} characters can take; {_FORMATS}")
    text = raw.strip()
    if not text:
        raise ApiKeysError(f"{SETTING} is empty; set at least one key ({_NEW_KEY})")
    if text[0] in '[{"':
        # JSON (a key can't start with these characters). json's errors name a position, never the text.
        try:
            value = json.loads(text)
        except RecursionError:
            raise ApiKeysError(f"{SETTING}: JSON nested too deeply; {_FORMATS}") from None
        except ValueError as err:       # JSONDecodeError, or an integer too long to convert
            where = f" (line {err.lineno}, column {err.colno}: {err.msg})" if isinstance(err, json.JSONDecodeError) \
                else ""
            raise ApiKeysError(f"{SETTING}: not valid JSON{where}; {_FORMATS}") from None
        if not isinstance(value, list):
            raise ApiKeysError(f"{SETTING}: JSON {_kind(value)}, not a list of strings; {_FORMATS}")
        return validate_api_keys(value)
    return validate_api_keys([k.strip() for k in re.split(r"[,\n]", text) if k.strip()])
